//! Cipher suites over the real API: a deployment switched from AES to SM4
//! (`crypto.suite`) serves objects of both suites side by side and says
//! which is which (HeadObject, GetObject, ListObjects); `keys reseal`
//! converts a space, leaves the others and held users' objects alone, and
//! (with the real binary) survives a SIGKILL mid-way.

use std::collections::BTreeMap;

use sealgate::crypto::keys::{kek_aad, user_key_aad};
use sealgate::crypto::{Kek, MasterKey, Pseudonym, Suite, UserKey, Wrapped};
use tonic::Code;

use super::*;
use crate::support::serve::{watch_to_end, watch_until, Served};

backend_tests!(a_deployment_switched_to_sm4_serves_both_suites_and_reseals_a_space);
key_store_tests!(a_deployment_made_under_sm4_keeps_its_key_suite_for_good);

const AES: &str = "aes-256-gcm";
const SM4: &str = "sm4-gcm";

/// Lengths that cover an empty body, a partial chunk, an exact chunk and
/// several chunks.
const LENGTHS: [usize; 4] = [0, 1, 16384, 40_000];

fn sm4(c: &mut Config) {
    c.crypto.suite = sealgate::crypto::Suite::Sm4Gcm;
}

type Written = BTreeMap<(String, String, String), Vec<u8>>;

/// Puts one object of every length for `user` in `space`; remembers them.
async fn put_all(gw: &TestGateway, written: &mut Written, user: &str, space: &str, tag: &str) {
    let mut c = gw.content().await;
    for (i, len) in LENGTHS.into_iter().enumerate() {
        let id = format!("{tag}-{i}");
        let body = data(len, (i as u64) << 8 | tag.len() as u64);
        put(&mut c, user, space, &id, &body, 7000)
            .await
            .expect("put");
        written.insert((user.into(), space.into(), id), body);
    }
}

/// Every written object reads back whole and by range, and names its suite
/// in HeadObject, GetObject and ListObjects; returns the suites by object.
async fn read_all(
    gw: &TestGateway,
    written: &Written,
) -> BTreeMap<(String, String, String), String> {
    let mut c = gw.content().await;
    let mut suites = BTreeMap::new();
    for ((user, space, id), body) in written {
        let (info, got) = get(&mut c, user, space, id, None).await.expect("get");
        assert_eq!(&got, body, "{user}/{space}/{id}");
        if body.len() > 20_000 {
            let (_, part) = get(&mut c, user, space, id, Some((16_380, Some(20_000))))
                .await
                .expect("ranged get");
            assert_eq!(part, body[16_380..20_000], "{user}/{space}/{id}");
        }
        let headed = head(&mut c, user, space, id).await.expect("head");
        assert_eq!(headed.suite, info.suite, "{user}/{space}/{id}");
        assert!([AES, SM4].contains(&info.suite.as_str()), "{info:?}");
        suites.insert((user.clone(), space.clone(), id.clone()), info.suite);
    }
    for (user, space) in written.keys().map(|(u, s, _)| (u.clone(), s.clone())) {
        let page = list_page(&mut c, &user, &space, 0, "").await.expect("list");
        for o in page.objects {
            let key = (user.clone(), space.clone(), o.object_id.clone());
            assert_eq!(Some(&o.suite), suites.get(&key), "{key:?} listed");
        }
    }
    suites
}

/// Every written object's `create_time` (HeadObject).
async fn create_times(gw: &TestGateway, written: &Written) -> Vec<Option<prost_types::Timestamp>> {
    let mut c = gw.content().await;
    let mut out = Vec::new();
    for (user, space, id) in written.keys() {
        out.push(
            head(&mut c, user, space, id)
                .await
                .expect("head")
                .create_time,
        );
    }
    out
}

async fn reseal(
    gw: &TestGateway,
    suite: &str,
    space: &str,
) -> Result<pb::ResealResponse, tonic::Status> {
    gw.admin()
        .await
        .reseal(pb::ResealRequest {
            suite: suite.into(),
            space: space.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn a_deployment_switched_to_sm4_serves_both_suites_and_reseals_a_space() {
    let mut written = Written::new();
    let gw = TestGateway::start().await;
    for user in ["ann", "bob", "held"] {
        put_all(&gw, &mut written, user, "moments", "old").await;
        put_all(&gw, &mut written, user, "channels", "old").await;
    }
    let suites = read_all(&gw, &written).await;
    assert!(suites.values().all(|s| s == AES), "{suites:?}");
    let before = pseudonym(&gw, "ann").await;

    // The same data directory, now sealing new objects in SM4. The
    // deployment's key suite (pseudonyms, key wraps) stays AES's.
    let gw = gw.restart_with(sm4).await;
    assert_eq!(pseudonym(&gw, "ann").await, before);
    assert_eq!(key_suite(&gw).await, AES);
    put_all(&gw, &mut written, "ann", "moments", "new").await;
    let suites = read_all(&gw, &written).await;
    for ((user, space, id), suite) in &suites {
        let want = if id.starts_with("new") { SM4 } else { AES };
        assert_eq!(suite, want, "{user}/{space}/{id}");
    }
    // A write over an AES object seals it in SM4.
    let mut c = gw.content().await;
    let body = data(100, 99);
    let info = put(&mut c, "bob", "channels", "old-1", &body, 64)
        .await
        .expect("overwrite");
    assert_eq!(info.suite, SM4);
    written.insert(("bob".into(), "channels".into(), "old-1".into()), body);

    // Bad requests start nothing.
    let bad = reseal(&gw, "rot13", "").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("aes-256-gcm, sm4-gcm"), "{bad:?}");
    let bad = reseal(&gw, SM4, "stories").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("moments, channels"), "{bad:?}");

    // Every object keeps its create_time through the reseals below.
    let created = create_times(&gw, &written).await;
    // A held user's objects are preserved as they are.
    gw.holds()
        .await
        .place_hold(pb::PlaceHoldRequest {
            user_id: "held".into(),
            case_ref: "case-7".into(),
        })
        .await
        .expect("PlaceHold");
    let started = reseal(&gw, SM4, "moments").await.expect("reseal");
    assert_eq!(
        (started.suite.as_str(), started.space.as_str()),
        (SM4, "moments")
    );
    let progress = watch_all(&gw, &started.job_id).await;
    let last = progress.last().expect("progress");
    assert_eq!(last.state, pb::JobState::Done as i32, "{progress:?}");
    // ann's and bob's four old objects in moments.
    assert_eq!(last.done, 8, "{last:?}");
    let suites = read_all(&gw, &written).await;
    for ((user, space, id), suite) in &suites {
        let overwritten =
            (user.as_str(), space.as_str(), id.as_str()) == ("bob", "channels", "old-1");
        let resealed = space == "moments" && user != "held";
        let want = if resealed || overwritten || id.starts_with("new") {
            SM4
        } else {
            AES
        };
        assert_eq!(suite, want, "{user}/{space}/{id}");
    }

    // And back, every space: the job converts what is not in its suite.
    gw.holds()
        .await
        .release_hold(pb::ReleaseHoldRequest {
            user_id: "held".into(),
            case_ref: "case-7".into(),
        })
        .await
        .expect("ReleaseHold");
    let started = reseal(&gw, AES, "").await.expect("reseal back");
    let last = watch_all(&gw, &started.job_id)
        .await
        .pop()
        .expect("progress");
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    let suites = read_all(&gw, &written).await;
    assert!(suites.values().all(|s| s == AES), "{suites:?}");
    // 8 resealed to SM4 in moments, 4 new ones, bob's overwrite.
    assert_eq!(last.done, 13, "{last:?}");
    assert_eq!(create_times(&gw, &written).await, created);
}

/// The real binary, SIGKILLed while a reseal of every space waits on a
/// failing listing (one user's second space is a file). A new process
/// takes the job over when the dead one's lease ends and finishes it from
/// its checkpoint: every object ends in SM4 with its bytes, and the count
/// is the whole, which a restart from zero could not report (the objects
/// done before the kill are in SM4 already and would not be counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reseal_resumes_from_its_checkpoint_after_sigkill() {
    const ENV: &[(&str, &str)] = &[
        ("SEALGATE_JOBS_LEASE_SECONDS", "2"),
        ("SEALGATE_JOBS_POLL_SECONDS", "1"),
        ("SEALGATE_CRYPTO_SUITE", "sm4-gcm"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path();

    // Written by an AES deployment.
    let mut first = Served::start(data_dir, &ENV[..2]).await;
    let mut c = first.content().await;
    let mut bodies = Vec::new();
    for user in ["u1", "u2"] {
        for space in ["moments", "channels"] {
            for (i, len) in LENGTHS.into_iter().enumerate() {
                let id = format!("o{i}");
                let body = data(len, i as u64);
                put(&mut c, user, space, &id, &body, 9000)
                    .await
                    .expect("put");
                bodies.push((user, space, id, body));
            }
        }
    }
    first.process.child.kill().expect("SIGKILL");
    first.process.child.wait().unwrap();

    // Switched to SM4; one user's channels cannot be listed for now.
    let mut second = Served::start(data_dir, ENV).await;
    let mut admin = second.admin().await;
    let p = second.pseudonym("u2").await;
    let dir = data_dir.join("objects").join("channels").join(&p);
    let aside = data_dir.join("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let job_id = admin
        .reseal(pb::ResealRequest {
            suite: SM4.into(),
            space: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let retrying = watch_until(&mut admin, &job_id, |p| !p.last_error.is_empty()).await;
    assert_eq!(retrying.state, pb::JobState::Running as i32);
    let at_kill = retrying.done;
    // u2's moments are done (and u1's eight, if u1 came first); u2's
    // channels are not.
    assert!(
        [4, 12].contains(&at_kill),
        "{at_kill} of {} at the kill",
        bodies.len()
    );
    second.process.child.kill().expect("SIGKILL");
    assert!(!second.process.child.wait().unwrap().success());

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&aside, &dir).unwrap();
    let third = Served::start(data_dir, ENV).await;
    let last = watch_to_end(&mut third.admin().await, &job_id).await;
    assert_eq!(last.state, pb::JobState::Done as i32, "{last:?}");
    assert_eq!(
        last.done,
        bodies.len() as u64,
        "resumed from the checkpoint"
    );
    let mut c = third.content().await;
    for (user, space, id, body) in &bodies {
        let (info, got) = get(&mut c, user, space, id, None).await.expect("get");
        assert_eq!(&got, body, "{user}/{space}/{id}");
        assert_eq!(info.suite, SM4, "{user}/{space}/{id}");
    }
    drop(third);
}

/// The second independent reader (`tests/format/open_object.py`, Python
/// over OpenSSL, written from FORMAT.md) opens every object of a
/// deployment made under SM4 from its data directory alone: the keyring,
/// `keys.db` (key suite, KEK and user-key rows in SM4) and the object
/// files, of both suites; and rejects a damaged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_reader_opens_a_deployment_made_under_sm4_from_its_files() {
    let gw = TestGateway::start_with(sm4).await;
    let mut written = Written::new();
    put_all(&gw, &mut written, "alice", "moments", "sm4").await;
    put_all(&gw, &mut written, "bob", "channels", "sm4").await;
    let mut gw = gw.restart().await;
    put_all(&gw, &mut written, "alice", "channels", "aes").await;
    gw.stop().await;
    let data_dir = gw.data_dir.clone();
    let reader = |data_dir: &std::path::Path| {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/format/open_object.py");
        let out = std::process::Command::new("python3")
            .arg(script)
            .args(["deployment", data_dir.to_str().unwrap(), "cn-north-1"])
            .args(["alice", "bob"])
            .output()
            .expect("python3 must be installed (scripts/test installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "reader: {stderr}"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                let key = (
                    v["user"].as_str().unwrap().to_string(),
                    v["space"].as_str().unwrap().to_string(),
                    v["id"].as_str().unwrap().to_string(),
                );
                (key, v)
            })
            .collect::<BTreeMap<_, _>>()
    };
    let opened = reader(&data_dir);
    assert_eq!(
        opened.keys().collect::<Vec<_>>(),
        written.keys().collect::<Vec<_>>()
    );
    for (key, body) in &written {
        let v = &opened[key];
        assert_eq!(v["ok"], true, "{key:?}: {v}");
        assert_eq!(v["key_suite"], SM4, "{v}");
        let want = if key.2.starts_with("sm4") { SM4 } else { AES };
        assert_eq!(v["suite"], want, "{v}");
        assert_eq!(v["plaintext_len"], body.len(), "{v}");
        let sha = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body));
        assert_eq!(v["plaintext_sha256"], sha.as_str(), "{v}");
    }
    // One byte of a body flipped: that object fails, the others open.
    let damaged = data_dir
        .join("objects/moments")
        .join(
            opened[&("alice".into(), "moments".into(), "sm4-3".into())]["pseudonym"]
                .as_str()
                .unwrap(),
        )
        .join("sm4-3");
    let mut bytes = std::fs::read(&damaged).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&damaged, bytes).unwrap();
    let again = reader(&data_dir);
    for (key, v) in &again {
        let broken = key.1 == "moments" && key.2 == "sm4-3";
        assert_eq!(v["ok"], !broken, "{key:?}: {v}");
    }
}

/// The deployment's key suite as its key store records it.
async fn key_suite(gw: &TestGateway) -> String {
    open_key_store(&gw.data_dir)
        .await
        .meta_value("key_suite")
        .await
        .expect("meta")
        .expect("a key suite is recorded")
}

/// The keyring's naming key and master key version 1.
fn keyring(gw: &TestGateway) -> (String, MasterKey) {
    let text = std::fs::read_to_string(gw.data_dir.join("keyring")).expect("keyring");
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .expect("keyring line")
            .trim()
            .to_string()
    };
    let master = hex::decode(field("master 1 ")).unwrap();
    (field("naming "), MasterKey::from_bytes(&master).unwrap())
}

/// HMAC-SM3 by Python's `cryptography` (OpenSSL), not by this crate.
fn python_hmac_sm3(key_hex: &str, message: &[u8]) -> String {
    let script = "import sys\n\
        from cryptography.hazmat.primitives import hashes, hmac\n\
        h = hmac.HMAC(bytes.fromhex(sys.argv[1]), hashes.SM3())\n\
        h.update(bytes.fromhex(sys.argv[2]))\n\
        print(h.finalize().hex())\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script, key_hex, &hex::encode(message)])
        .output()
        .expect("python3 must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "python3 with cryptography: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every user key of `user` unwraps from its KEK, and the KEK from the
/// keyring, in `suite` and not in the other.
async fn assert_wrapped_in(gw: &TestGateway, user: &str, suite: Suite) {
    let other = if suite == Suite::Sm4Gcm {
        Suite::Aes256Gcm
    } else {
        Suite::Sm4Gcm
    };
    let (_, master) = keyring(gw);
    let store = open_key_store(&gw.data_dir).await;
    let p = Pseudonym::from_hex(&pseudonym(gw, user).await).unwrap();
    let rows = store.user_keys(&p).await.unwrap();
    assert!(!rows.is_empty(), "{user} has keys");
    for r in rows {
        let kek_row = store.kek(r.shard, r.kek_version).await.unwrap().unwrap();
        assert_eq!(kek_row.master_version, 1);
        let wrapped = Wrapped::<Kek>::from_bytes(&kek_row.wrapped).unwrap();
        let aad = kek_aad(r.shard, r.kek_version);
        assert!(master.unwrap_kek_in(other, &wrapped, &aad).is_err());
        let kek = master.unwrap_kek_in(suite, &wrapped, &aad).expect("KEK");
        let wrapped = Wrapped::<UserKey>::from_bytes(&r.wrapped).unwrap();
        let aad = user_key_aad(&p, r.version, r.shard, r.kek_version);
        assert!(kek.unwrap_user_key_in(other, &wrapped, &aad).is_err());
        kek.unwrap_user_key_in(suite, &wrapped, &aad)
            .expect("user key");
    }
}

async fn a_deployment_made_under_sm4_keeps_its_key_suite_for_good() {
    let gw = TestGateway::start_with(sm4).await;
    let mut written = Written::new();
    put_all(&gw, &mut written, "alice", "moments", "sm4").await;
    assert_eq!(key_suite(&gw).await, SM4);
    // Pseudonyms are HMAC-SM3 of the user id (FORMAT.md "Pseudonyms").
    let (naming, _) = keyring(&gw);
    let alice = pseudonym(&gw, "alice").await;
    assert_eq!(
        alice,
        python_hmac_sm3(&naming, b"sealgate/v1/pseudonym\0alice")
    );
    assert_wrapped_in(&gw, "alice", Suite::Sm4Gcm).await;

    // Configured for AES later: new objects are AES, keys and names stay
    // SM's, and a new user's keys are wrapped in SM4 too.
    let gw = gw.restart().await;
    assert_eq!(pseudonym(&gw, "alice").await, alice);
    assert_eq!(key_suite(&gw).await, SM4);
    put_all(&gw, &mut written, "alice", "moments", "aes").await;
    put_all(&gw, &mut written, "carol", "channels", "aes").await;
    let suites = read_all(&gw, &written).await;
    for ((user, space, id), suite) in &suites {
        let want = if id.starts_with("sm4") { SM4 } else { AES };
        assert_eq!(suite, want, "{user}/{space}/{id}");
    }
    assert_wrapped_in(&gw, "carol", Suite::Sm4Gcm).await;
    assert_eq!(
        pseudonym(&gw, "carol").await,
        python_hmac_sm3(&naming, b"sealgate/v1/pseudonym\0carol")
    );
}
