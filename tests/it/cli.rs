//! The `sealgate` command line, run as a real process against a gateway.

use std::process::{Command, Output};

use crate::gateway::TestGateway;

fn sealgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sealgate"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run sealgate")
}

/// Asserts success and returns stdout as text (lossy: binary output is
/// compared through `Output::stdout` instead).
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_round_trip() {
    let gw = TestGateway::start().await;
    let ep = gw.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.bin");
    let body = crate::gateway::data(40_000, 7);
    std::fs::write(&file, &body).unwrap();
    let file = file.to_str().unwrap().to_string();

    let ep2 = ep.clone();
    let out = tokio::task::spawn_blocking(move || {
        let ep = ep2.as_str();
        let id = ok(&sealgate(&[
            "put",
            "--endpoint",
            ep,
            "--user",
            "u1",
            "--space",
            "moments",
            "--id",
            "pic",
            &file,
        ]));
        assert_eq!(id.trim(), "pic");
        let generated = ok(&sealgate(&[
            "put",
            "--endpoint",
            ep,
            "--user",
            "u1",
            "--space",
            "moments",
            &file,
        ]));
        assert_eq!(generated.trim().len(), 32, "generated ids are 32 hex chars");

        let whole = sealgate(&[
            "get",
            "--endpoint",
            ep,
            "--user",
            "u1",
            "--space",
            "moments",
            "--id",
            "pic",
        ]);
        ok(&whole);
        let ranged = sealgate(&[
            "get",
            "--endpoint",
            ep,
            "--user",
            "u1",
            "--space",
            "moments",
            "--id",
            "pic",
            "--range",
            "16380-16390",
        ]);
        ok(&ranged);
        let listing = ok(&sealgate(&[
            "ls",
            "--endpoint",
            ep,
            "--user",
            "u1",
            "--space",
            "moments",
        ]));
        let status = ok(&sealgate(&[
            "keys",
            "status",
            "--endpoint",
            ep,
            "--user",
            "u1",
        ]));
        ok(&sealgate(&[
            "rm",
            "--endpoint",
            ep,
            "--user",
            "u1",
            "--space",
            "moments",
            "--id",
            "pic",
        ]));
        let missing = sealgate(&[
            "get",
            "--endpoint",
            ep,
            "--user",
            "u1",
            "--space",
            "moments",
            "--id",
            "pic",
        ]);
        let receipt = ok(&sealgate(&["erase", "--endpoint", ep, "--user", "u1"]));
        let erased = sealgate(&["ls", "--endpoint", ep, "--user", "u1", "--space", "moments"]);
        (
            whole, ranged, listing, status, missing, receipt, erased, generated,
        )
    })
    .await
    .unwrap();
    let (whole, ranged, listing, status, missing, receipt, erased, generated) = out;
    assert_eq!(whole.stdout, body);
    assert_eq!(ranged.stdout, &body[16380..=16390], "END is inclusive");
    assert_eq!(
        listing,
        format!("{}\t40000\npic\t40000\n", generated.trim())
    );
    assert!(
        status.contains("user_key_version: 1 state=USER_KEY_STATE_ACTIVE"),
        "{status}"
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
    assert!(receipt.contains("destroyed_key_versions: 1"), "{receipt}");
    assert!(receipt.contains("gc_job_id: "), "{receipt}");
    assert!(!erased.status.success());
    assert!(
        String::from_utf8_lossy(&erased.stderr)
            .contains("FailedPrecondition: user has been erased"),
        "{}",
        String::from_utf8_lossy(&erased.stderr)
    );
}

#[test]
fn plaintext_on_a_public_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = sealgate(&[
        "serve",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}

#[test]
fn unreachable_endpoint_fails_cleanly() {
    // Port 1 on loopback: nothing listens there.
    let out = sealgate(&[
        "ls",
        "--endpoint",
        "http://127.0.0.1:1",
        "--user",
        "u",
        "--space",
        "moments",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}
