//! ExportUser: the archive read back by an independent reader (Python's
//! `tarfile`), resumption byte for byte, a change between the calls,
//! disclosure under the right and the wrong case, a restricted user; the
//! command line's archive, and its resumption by a later run after a cut.

use std::path::Path;
use std::process::Command;

use sealgate::api::pb;
use sealgate::api::pb::audit_service_client::AuditServiceClient;
use sealgate::api::pb::export_service_client::ExportServiceClient;
use tonic::transport::Channel;
use tonic::Code;

use crate::support::proxy::FaultProxy;

use super::{
    audit_records, data, expect_reason, pseudonym, put, put_item, ContentServiceClient, TestGateway,
};

/// SHA-256 in hex, by the library sealgate uses (Python's hashlib checks
/// the archive's side).
pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

async fn client(gw: &TestGateway) -> ExportServiceClient<Channel> {
    ExportServiceClient::new(gw.channel().await).max_decoding_message_size(8 << 20)
}

pub(super) fn request(
    user: &str,
    case: &str,
    resume: Option<(&str, u64)>,
) -> pb::ExportUserRequest {
    pb::ExportUserRequest {
        user_id: user.into(),
        case_ref: case.into(),
        resume: resume.map(|(snapshot, offset)| pb::ExportResume {
            snapshot: snapshot.into(),
            offset,
        }),
    }
}

/// The whole stream: the archive bytes from the request's offset and the
/// snapshot, each chunk checked (contiguous offsets, at most 1 MiB, the
/// snapshot on the first only).
pub(super) async fn export(
    gw: &TestGateway,
    req: pb::ExportUserRequest,
) -> Result<(Vec<u8>, String), tonic::Status> {
    let from = req.resume.as_ref().map_or(0, |r| r.offset);
    let mut stream = client(gw).await.export_user(req).await?.into_inner();
    let (mut bytes, mut snapshot) = (Vec::new(), None);
    while let Some(chunk) = stream.message().await? {
        assert!(chunk.data.len() <= 1 << 20, "a chunk over 1 MiB");
        assert_eq!(
            chunk.offset,
            from + bytes.len() as u64,
            "offsets contiguous"
        );
        match &snapshot {
            None => {
                assert_eq!(
                    chunk.snapshot.len(),
                    64,
                    "the first chunk names the snapshot"
                );
                snapshot = Some(chunk.snapshot.clone());
            }
            Some(_) => assert!(chunk.snapshot.is_empty()),
        }
        bytes.extend_from_slice(&chunk.data);
    }
    Ok((bytes, snapshot.expect("at least one chunk")))
}

/// What Python's tarfile makes of an archive (see tests/export/list_tar.py).
pub(super) fn python_read(archive: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.tar");
    std::fs::write(&path, archive).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/export/list_tar.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&path)
        .arg(dir.path().join("x"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "tarfile refused the archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Objects of `eve` in both spaces (one over 2 MiB, one with a 128-byte id,
/// an item), and one of `bob`; what eve's export must hold, sorted.
async fn fill(c: &mut ContentServiceClient<Channel>) -> Vec<(String, Vec<u8>, &'static str)> {
    // An id past the ustar name field (a PAX path), the longest there is.
    // s3s-fs names a file after the whole key in base64 (255 bytes at most:
    // ids up to about 80), so there a shorter one; the PAX path is then
    // exercised on the other stores.
    let long_len =
        if crate::support::gateway::backend_kind() == crate::support::gateway::BackendKind::S3s {
            60
        } else {
            128
        };
    let long = "L".repeat(long_len);
    let objects = [
        ("moments", "pic-b".to_string(), data(2_500_000, 1)),
        ("moments", "pic-a".to_string(), data(70_000, 2)),
        ("channels", long, data(1000, 3)),
    ];
    let mut want = Vec::new();
    for (space, id, body) in objects {
        put(c, "eve", space, &id, &body, 256 * 1024).await.unwrap();
        want.push((format!("{space}/{id}"), body, "image/jpeg"));
    }
    put_item(c, "eve", "moments", "note", b"a comment")
        .await
        .unwrap();
    want.push(("moments/note".into(), b"a comment".to_vec(), "text/plain"));
    put(c, "bob", "moments", "pic-a", b"not eve's", 64)
        .await
        .unwrap();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    want
}

async fn a_full_export_reads_back_in_python_as_what_was_put() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let want = fill(&mut c).await;
    let (archive, snapshot) = export(&gw, request("eve", "", None)).await.unwrap();
    assert_eq!(archive.len() % 512, 0);
    assert!(archive.ends_with(&[0; 1024]));

    let read = python_read(&archive);
    let members = read["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = want.iter().map(|w| w.0.as_str()).collect();
    expected.push("manifest.json");
    assert_eq!(names, expected, "space, then id; the manifest last");
    // A path past the ustar name field is a PAX path (none on s3s-fs).
    assert_eq!(
        members[0]["pax"].as_bool().unwrap(),
        members[0]["name"].as_str().unwrap().len() > 100,
        "{:?}",
        members[0]
    );
    for (m, (path, body, _)) in members.iter().zip(&want) {
        assert_eq!(m["name"], path.as_str());
        assert_eq!(m["size"], body.len());
        assert_eq!(m["sha256"], sha256_hex(body));
        assert_eq!(
            (m["mode"].as_u64(), m["uid"].as_u64()),
            (Some(0o644), Some(0))
        );
        assert_eq!(
            (m["uname"].as_str(), m["gname"].as_str()),
            (Some(""), Some(""))
        );
        assert!(m["mtime"].as_u64().unwrap() > 1_600_000_000, "{m}");
    }

    let manifest = &read["manifest"];
    assert_eq!(manifest["format"], "sealgate-export/1");
    assert_eq!(manifest["snapshot"], snapshot.as_str());
    let objects = manifest["objects"].as_array().unwrap();
    assert_eq!(objects.len(), want.len());
    for (o, (path, body, content_type)) in objects.iter().zip(&want) {
        let (space, id) = path.split_once('/').unwrap();
        assert_eq!(
            (o["space"].as_str(), o["id"].as_str()),
            (Some(space), Some(id))
        );
        assert_eq!(o["size"], body.len());
        assert_eq!(o["sha256"], sha256_hex(body));
        assert_eq!(o["content_type"], *content_type);
        assert!(o["create_time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(o["attributes"].as_object().unwrap().len(), 1);
    }

    // Deterministic: a second export is the same archive.
    let (again, snapshot2) = export(&gw, request("eve", "", None)).await.unwrap();
    assert_eq!(snapshot2, snapshot);
    assert!(again == archive, "a second export differs");
}

async fn a_resumed_export_is_byte_identical_and_a_change_between_is_refused() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    fill(&mut c).await;
    let (full, snapshot) = export(&gw, request("eve", "", None)).await.unwrap();

    // Broken after at least 1.5 MiB: the stream is dropped mid-archive.
    let mut stream = client(&gw)
        .await
        .export_user(request("eve", "", None))
        .await
        .unwrap()
        .into_inner();
    let mut have = Vec::new();
    while have.len() < 1_500_000 {
        let chunk = stream.message().await.unwrap().expect("more chunks");
        have.extend_from_slice(&chunk.data);
    }
    drop(stream);
    assert!(have.len() < full.len());
    let (rest, snapshot2) = export(
        &gw,
        request("eve", "", Some((&snapshot, have.len() as u64))),
    )
    .await
    .unwrap();
    assert_eq!(snapshot2, snapshot);
    have.extend_from_slice(&rest);
    assert!(
        have == full,
        "resumed archive differs from an uninterrupted one"
    );

    // Resuming at the very end sends nothing more; past it is refused.
    let (none, _) = export(
        &gw,
        request("eve", "", Some((&snapshot, full.len() as u64))),
    )
    .await
    .unwrap();
    assert!(none.is_empty());
    let past = export(
        &gw,
        request("eve", "", Some((&snapshot, full.len() as u64 + 1))),
    )
    .await;
    assert_eq!(past.unwrap_err().code(), Code::OutOfRange);

    // A changed object: the resume is refused before any byte.
    put(&mut c, "eve", "moments", "pic-a", b"changed", 64)
        .await
        .unwrap();
    let s = expect_reason(
        export(&gw, request("eve", "", Some((&snapshot, 512)))).await,
        Code::FailedPrecondition,
        "EXPORT_CHANGED",
        "resume after a change",
    );
    assert!(s.message().contains("start again"), "{s:?}");
}

async fn place_hold(gw: &TestGateway, user: &str, case: &str) {
    gw.holds()
        .await
        .place_hold(pb::PlaceHoldRequest {
            user_id: user.into(),
            case_ref: case.into(),
        })
        .await
        .unwrap();
}

async fn schedule_erasure(gw: &TestGateway, user: &str) {
    gw.erasure()
        .await
        .erase_user(pb::EraseUserRequest {
            user_id: user.into(),
            after_seconds: 3600,
        })
        .await
        .unwrap();
}

async fn a_disclosure_needs_the_holding_case_and_outlives_a_restriction() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let want = fill(&mut c).await;
    place_hold(&gw, "eve", "case-2026-7").await;

    expect_reason(
        export(&gw, request("eve", "case-other", None)).await,
        Code::PermissionDenied,
        "CASE_NOT_HOLDING",
        "a case that does not hold eve",
    );
    expect_reason(
        export(&gw, request("bob", "case-2026-7", None)).await,
        Code::PermissionDenied,
        "CASE_NOT_HOLDING",
        "the case holds eve, not bob",
    );

    // Restricted (held, her erasure asked for): her own copy is refused
    // before any byte, a disclosure under the holding case is not.
    schedule_erasure(&gw, "eve").await;
    expect_reason(
        export(&gw, request("eve", "", None)).await,
        Code::FailedPrecondition,
        "USER_RESTRICTED",
        "own copy of a restricted user",
    );
    let (archive, _) = export(&gw, request("eve", "case-2026-7", None))
        .await
        .expect("a disclosure of a restricted user");
    let read = python_read(&archive);
    assert_eq!(read["manifest"]["case_ref"], "case-2026-7");
    let members = read["members"].as_array().unwrap();
    assert_eq!(members.len(), want.len() + 1);
    for (m, (_, body, _)) in members.iter().zip(&want) {
        assert_eq!(m["sha256"], sha256_hex(body));
    }
    // Still restricted for content calls afterwards.
    expect_reason(
        export(&gw, request("eve", "", None)).await,
        Code::FailedPrecondition,
        "USER_RESTRICTED",
        "own copy after a disclosure",
    );

    let mut audit = AuditServiceClient::new(gw.channel().await);
    let records = audit_records(&mut audit, "eve", None).await;
    let p = pseudonym(&gw, "eve").await;
    let disclosures: Vec<_> = records
        .iter()
        .filter(|r| r.action == "disclose_user")
        .collect();
    assert_eq!(disclosures.len(), 2, "{records:?}");
    assert_eq!(disclosures[0].outcome, "denied");
    assert!(disclosures[0].detail.contains("case-other"));
    let ok = disclosures[1];
    assert_eq!(
        (ok.outcome.as_str(), ok.principal.as_str()),
        ("ok", "local")
    );
    assert_eq!(ok.pseudonym, p);
    let bytes: usize = want.iter().map(|w| w.1.len()).sum();
    assert!(
        ok.detail.starts_with("case case-2026-7: 4 objects, ")
            && ok.detail.contains(&format!("{bytes} plaintext bytes"))
            && ok
                .detail
                .contains(&format!("archive {} bytes", archive.len())),
        "{}",
        ok.detail
    );
    assert!(
        records.iter().all(|r| r.action != "export_user"),
        "refused own copies start no export"
    );
}

async fn an_own_export_is_audited_and_an_erased_user_has_none() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    put_item(&mut c, "ivy", "moments", "note", b"hi")
        .await
        .unwrap();
    let (archive, _) = export(&gw, request("ivy", "", None)).await.unwrap();
    let mut audit = AuditServiceClient::new(gw.channel().await);
    let records = audit_records(&mut audit, "ivy", None).await;
    let own = records
        .iter()
        .find(|r| r.action == "export_user")
        .expect("export_user recorded");
    assert_eq!(own.outcome, "ok");
    assert!(
        own.detail.starts_with(&format!(
            "1 objects, 2 plaintext bytes, archive {} bytes",
            archive.len()
        )),
        "{}",
        own.detail
    );
    super::try_erase(&gw, "ivy").await.unwrap();
    expect_reason(
        export(&gw, request("ivy", "", None)).await,
        Code::FailedPrecondition,
        "USER_ERASED",
        "export of an erased user",
    );
}

/// `sealgate export -o FILE`: the same archive as the API's, renamed
/// from `FILE.part` once whole, with the object count printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_writes_the_same_archive() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    let want = fill(&mut c).await;
    let (archive, snapshot) = export(&gw, request("eve", "", None)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eve.tar");
    let (endpoint, target) = (gw.endpoint(), file.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .args(["export", "--user", "eve", "-o"])
            .arg(&target)
            .arg("--endpoint")
            .arg(endpoint)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{} objects, {} bytes, snapshot {snapshot}",
            want.len(),
            archive.len()
        )),
        "{stdout}"
    );
    assert!(std::fs::read(&file).unwrap() == archive);
    assert!(!dir.path().join("eve.tar.part").exists());
}

/// `sealgate export --user U -o FILE` through `endpoint`.
async fn export_command(user: &str, file: &Path, endpoint: String) -> std::process::Output {
    let (user, file) = (user.to_string(), file.to_path_buf());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sealgate"))
            .args(["export", "--user", &user, "-o"])
            .arg(&file)
            .arg("--endpoint")
            .arg(endpoint)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A run of the command whose connection is cut after about `cut` bytes
/// of the server's, the gateway unreachable for the rest of the run (its
/// in-run resumptions fail): it fails and keeps what it received, a
/// prefix of `archive`, in `FILE.part` with its cursor. The bytes kept.
async fn cut_run(proxy: &FaultProxy, file: &Path, archive: &[u8], cut: u64) -> Vec<u8> {
    proxy.go_down_after(cut);
    let out = export_command("eve", file, proxy.endpoint()).await;
    proxy.set_up(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a cut export succeeded: {stderr}");
    assert!(
        stderr.contains("run the command again to resume"),
        "{stderr}"
    );
    assert!(!file.exists());
    let part = file.with_extension("tar.part");
    let kept = std::fs::read(&part).expect("the partial file is kept");
    assert!(
        !kept.is_empty() && kept.len() < archive.len(),
        "{} bytes kept of {}",
        kept.len(),
        archive.len()
    );
    assert!(archive.starts_with(&kept), "the partial file is a prefix");
    assert!(file.with_extension("tar.part.cursor").exists());
    kept
}

/// `sealgate export` cut off mid-archive and run again: the second run
/// resumes from `FILE.part` and its cursor, and the file is byte for byte
/// the uninterrupted export. Cut again, then the user's objects changed:
/// the next run is refused `EXPORT_CHANGED` and removes the partial file,
/// and the run after writes the new archive from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_resumes_a_cut_export_in_a_later_run() {
    let gw = TestGateway::start().await;
    let mut c = gw.content().await;
    fill(&mut c).await;
    put(
        &mut c,
        "eve",
        "moments",
        "pic-c",
        &data(3_000_000, 4),
        256 * 1024,
    )
    .await
    .unwrap();
    let (archive, snapshot) = export(&gw, request("eve", "", None)).await.unwrap();
    let proxy = FaultProxy::start(gw.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eve.tar");
    let part = dir.path().join("eve.tar.part");
    let cursor = dir.path().join("eve.tar.part.cursor");

    let kept = cut_run(&proxy, &file, &archive, 2_000_000).await;
    let out = export_command("eve", &file, proxy.endpoint()).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resuming {} from its {} bytes (snapshot {snapshot})",
            part.display(),
            kept.len()
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("{} bytes, snapshot {snapshot}", archive.len())),
        "{stdout}"
    );
    assert!(
        std::fs::read(&file).unwrap() == archive,
        "the resumed file differs from an uninterrupted export"
    );
    assert!(!part.exists() && !cursor.exists());

    std::fs::remove_file(&file).unwrap();
    cut_run(&proxy, &file, &archive, 1_000_000).await;
    put(&mut c, "eve", "moments", "pic-a", b"changed", 64)
        .await
        .unwrap();
    let out = export_command("eve", &file, proxy.endpoint()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("EXPORT_CHANGED") || stderr.contains("changed since the export began"),
        "{stderr}"
    );
    assert!(
        stderr.contains("it was removed: run the command again for a new archive"),
        "{stderr}"
    );
    assert!(!part.exists() && !cursor.exists() && !file.exists());
    let (changed, _) = export(&gw, request("eve", "", None)).await.unwrap();
    let out = export_command("eve", &file, proxy.endpoint()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&file).unwrap() == changed);
}

// The archive's bytes depend on what the object store keeps (creation
// times, listing order): byte-identical resumption against each of them.
mod stores {
    backend_tests!(
        a_full_export_reads_back_in_python_as_what_was_put,
        a_resumed_export_is_byte_identical_and_a_change_between_is_refused,
    );
    use super::{
        a_full_export_reads_back_in_python_as_what_was_put,
        a_resumed_export_is_byte_identical_and_a_change_between_is_refused,
    };
}

key_store_tests!(
    a_full_export_reads_back_in_python_as_what_was_put,
    a_resumed_export_is_byte_identical_and_a_change_between_is_refused,
    a_disclosure_needs_the_holding_case_and_outlives_a_restriction,
    an_own_export_is_audited_and_an_erased_user_has_none,
);
