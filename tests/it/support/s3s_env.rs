//! A second S3 implementation for the tests: s3s-fs (crates.io), served
//! in-process on loopback, one server per test (its own directory, so
//! counts of unfinished uploads are the test's own).
//!
//! s3s-fs answers GetBucketLocation without a location; a thin wrapper
//! answers the test region and delegates everything else, so the gateway's
//! residency check stays exactly as strict. It has no versioning API
//! (GetBucketVersioning, ListObjectVersions answer 501), which is what the
//! gateway's plain-delete path is for.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto;
use s3s::{S3Request, S3Response, S3Result, S3};

use super::launch::LoopbackServer;
use super::s3env::{ACCESS_KEY, REGION, SECRET_KEY};

/// s3s-fs, with the bucket location answered.
struct Located(s3s_fs::FileSystem);

/// Implements [`S3`] for [`Located`]: GetBucketLocation answers
/// [`REGION`], the listed operations go to s3s-fs, and every other one
/// keeps the trait's 501 NotImplemented.
macro_rules! located {
    ($($name:ident: $input:ident => $output:ident),+ $(,)?) => {
        #[async_trait::async_trait]
        impl S3 for Located {
            async fn get_bucket_location(
                &self,
                req: S3Request<dto::GetBucketLocationInput>,
            ) -> S3Result<S3Response<dto::GetBucketLocationOutput>> {
                let mut response = self.0.get_bucket_location(req).await?;
                response.output.location_constraint =
                    Some(dto::BucketLocationConstraint::from(REGION.to_string()));
                Ok(response)
            }
            $(
                async fn $name(
                    &self,
                    req: S3Request<dto::$input>,
                ) -> S3Result<S3Response<dto::$output>> {
                    self.0.$name(req).await
                }
            )+
        }
    };
}

located!(
    create_bucket: CreateBucketInput => CreateBucketOutput,
    head_bucket: HeadBucketInput => HeadBucketOutput,
    put_object: PutObjectInput => PutObjectOutput,
    get_object: GetObjectInput => GetObjectOutput,
    head_object: HeadObjectInput => HeadObjectOutput,
    copy_object: CopyObjectInput => CopyObjectOutput,
    delete_object: DeleteObjectInput => DeleteObjectOutput,
    delete_objects: DeleteObjectsInput => DeleteObjectsOutput,
    list_objects: ListObjectsInput => ListObjectsOutput,
    list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
    create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput,
    upload_part: UploadPartInput => UploadPartOutput,
    complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
    abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
);

/// The directory of each running server, by endpoint.
fn roots() -> &'static Mutex<HashMap<String, PathBuf>> {
    static ROOTS: std::sync::OnceLock<Mutex<HashMap<String, PathBuf>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(Default::default)
}

/// Starts a server on the current runtime (it stops with it) and returns
/// its endpoint.
pub async fn start() -> String {
    let dir = tempfile::tempdir().expect("s3s-fs directory");
    let root = dir.path().to_path_buf();
    let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs");
    let mut builder = s3s::service::S3ServiceBuilder::new(Located(fs));
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let server = LoopbackServer::start(|listener| async move {
        let _dir = dir;
        let http = ConnBuilder::new(TokioExecutor::new());
        while let Ok((socket, _)) = listener.accept().await {
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    })
    .await;
    let endpoint = format!("http://{}", server.detach());
    roots().lock().unwrap().insert(endpoint.clone(), root);
    endpoint
}

/// Unfinished multipart uploads of the server at `endpoint`, if it is an
/// s3s-fs server of this process: it keeps one `.upload-{id}.json` per
/// upload at its root, and has no ListMultipartUploads.
pub fn incomplete_uploads(endpoint: &str) -> Option<usize> {
    let root = roots().lock().unwrap().get(endpoint).cloned()?;
    let count = std::fs::read_dir(root)
        .expect("s3s-fs root")
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with(".upload-") && name.ends_with(".json")
        })
        .count();
    Some(count)
}
