//! What a gateway stored, below the API, whatever the backend: objects by
//! key, leftovers of unfinished uploads, every byte at rest.

use std::path::{Path, PathBuf};

use super::backend::Backend;
use super::server::TestGateway;
use crate::support::s3env;

/// Access to what the gateway stored, below the API, whatever the backend.
/// Object keys are named `{space}/{pseudonym}/{id}` on both backends.
impl TestGateway {
    /// A plain S3 client and the bucket, on the S3 backends; `None` on the
    /// filesystem.
    pub fn s3(&self) -> Option<(aws_sdk_s3::Client, &str)> {
        match &self.backend {
            Backend::Fs => None,
            Backend::S3 { endpoint, bucket } => {
                Some((s3env::client(endpoint, s3env::REGION), bucket.as_str()))
            }
        }
    }

    /// The stored (sealed) bytes of an object, if it exists.
    pub async fn stored_object(&self, space: &str, pseudonym: &str, id: &str) -> Option<Vec<u8>> {
        let Some((c, bucket)) = self.s3() else {
            let path = object_path(&self.data_dir, space, pseudonym, id);
            return match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read {}: {e}", path.display()),
            };
        };
        let key = format!("{space}/{pseudonym}/{id}");
        match c.get_object().bucket(bucket).key(&key).send().await {
            Ok(o) => {
                // A key-slot patch lives in the object's metadata; these
                // bytes would not include it (and an overwrite drops it).
                assert!(
                    !o.metadata()
                        .is_some_and(|m| m.contains_key("sealgate-patch")),
                    "{key} carries a patch: its stored bytes are not the body alone"
                );
                Some(o.body.collect().await.unwrap().into_bytes().to_vec())
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(e) => panic!("GetObject {key}: {e:?}"),
        }
    }

    /// Replaces the stored bytes of an object (to corrupt or restore it).
    pub async fn overwrite_stored_object(
        &self,
        space: &str,
        pseudonym: &str,
        id: &str,
        bytes: &[u8],
    ) {
        let Some((c, bucket)) = self.s3() else {
            let path = object_path(&self.data_dir, space, pseudonym, id);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            return;
        };
        c.put_object()
            .bucket(bucket)
            .key(format!("{space}/{pseudonym}/{id}"))
            .body(bytes.to_vec().into())
            .send()
            .await
            .expect("PutObject");
    }

    /// Every key in the store, sorted: on the filesystem every file under
    /// `objects` (temporary files in `.tmp/` included), on S3 every object
    /// in the bucket; but not the store's deployment id, which is no object.
    pub async fn stored_keys(&self) -> Vec<String> {
        let mut keys = match &self.backend {
            Backend::Fs => {
                let root = self.data_dir.join("objects");
                files_under(&root)
                    .iter()
                    .map(|f| {
                        f.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect()
            }
            Backend::S3 { endpoint, bucket } => s3env::all_keys(endpoint, bucket).await,
        };
        keys.retain(|k| {
            k != sealgate::blob::fs::STORE_ID_FILE && k != sealgate::blob::s3::STORE_ID_KEY
        });
        keys.sort();
        keys
    }

    /// The keys of every object stored for `pseudonym`, in any space.
    pub async fn user_objects(&self, pseudonym: &str) -> Vec<String> {
        self.stored_keys()
            .await
            .into_iter()
            .filter(|k| k.split('/').nth(1) == Some(pseudonym))
            .collect()
    }

    /// Unfinished uploads the store holds: temporary files on the
    /// filesystem, incomplete multipart uploads on S3.
    pub async fn leftovers(&self) -> usize {
        match &self.backend {
            Backend::Fs => tmp_files(&self.data_dir).len(),
            Backend::S3 { endpoint, bucket } => {
                match crate::support::s3s_env::incomplete_uploads(endpoint) {
                    Some(n) => n,
                    None => s3env::incomplete_uploads(endpoint, bucket).await,
                }
            }
        }
    }

    /// Asserts that the store holds nothing: no object and no leftover.
    pub async fn assert_nothing_stored(&self, what: &str) {
        assert_eq!(self.stored_keys().await, Vec::<String>::new(), "{what}");
        assert_eq!(self.leftovers().await, 0, "{what}: unfinished uploads");
    }

    /// Everything at rest, named: every file under the data directory (key
    /// store, keyring, and on the filesystem backend the objects), named
    /// relative to it, and on S3 also every object in the bucket, as
    /// `s3:{key}` (its body) and `s3:{key} (metadata)` (its content type
    /// and user metadata).
    pub async fn all_stored_bytes(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = read_tree(&self.data_dir);
        if let Backend::S3 { endpoint, bucket } = &self.backend {
            let c = s3env::client(endpoint, s3env::REGION);
            for (key, body) in s3env::all_objects(endpoint, bucket).await {
                let head = c
                    .head_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("HeadObject {key}: {e:?}"));
                let mut meta = head.content_type().unwrap_or_default().as_bytes().to_vec();
                for (k, v) in head.metadata().into_iter().flatten() {
                    meta.extend_from_slice(format!("\n{k}: {v}").as_bytes());
                }
                out.push((format!("s3:{key} (metadata)"), meta));
                out.push((format!("s3:{key}"), body));
            }
        }
        out
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Every file under `dir` with its bytes, named relative to `dir`.
///
/// SQLite may remove its `-wal` and `-shm` files while the key store closes
/// after a stop; a file vanishing mid-read restarts the listing, so the
/// result always covers one complete listing.
pub fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    'attempt: for _ in 0..20 {
        let mut out = Vec::new();
        for f in files_under(dir) {
            let bytes = match std::fs::read(&f) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'attempt,
                Err(e) => panic!("read {}: {e}", f.display()),
            };
            let name = f.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            out.push((name, bytes));
        }
        return out;
    }
    panic!(
        "files under {} kept vanishing while being read",
        dir.display()
    );
}

/// Where the filesystem store keeps an object.
pub fn object_path(data_dir: &Path, space: &str, pseudonym: &str, id: &str) -> PathBuf {
    data_dir
        .join("objects")
        .join(space)
        .join(pseudonym)
        .join(id)
}

/// The files in the store's temporary directory (uploads in progress).
pub fn tmp_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("objects").join(".tmp"))
}
