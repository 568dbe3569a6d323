//! mTLS identities and roles: a gateway with `[tls]` and `[[principals]]`,
//! called by clients holding certificates made in the test. Every refusal
//! has its exact status and reason; health stays open.

use std::time::Duration;

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use sealgate::api::pb::legal_hold_service_client::LegalHoldServiceClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::{audit_records, expect_reason, get, obj, put};
use crate::support::eventually;
use crate::support::gateway::tls::*;
use crate::support::pki::{replace_file, Ca, Leaf};

async fn erase(
    client: &mut ErasureServiceClient<Channel>,
    user: &str,
) -> Result<pb::EraseReceipt, tonic::Status> {
    client
        .erase_user(pb::EraseUserRequest {
            user_id: user.into(),
            after_seconds: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn key_status(
    client: &mut KeyAdminServiceClient<Channel>,
    user: &str,
) -> Result<(), tonic::Status> {
    client
        .key_status(pb::KeyStatusRequest {
            user_id: user.into(),
            ..Default::default()
        })
        .await
        .map(drop)
}

/// The refusals in the audit trail, as (principal, detail), read by ops.
async fn denials(t: &TlsGateway) -> Vec<(String, String)> {
    let ops = t.ca.client_dns(OPS);
    let mut audit = sealgate::api::pb::audit_service_client::AuditServiceClient::new(
        t.channel(Some(&ops)).await,
    );
    audit_records(&mut audit, "", None)
        .await
        .into_iter()
        .filter(|r| r.action == "denied")
        .inspect(|r| assert_eq!(r.outcome, "denied"))
        .map(|r| (r.principal, r.detail))
        .collect()
}

async fn serving(channel: Channel) -> bool {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "sealgate.v1.ContentService".into(),
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_reaches_its_service() {
    let t = TlsGateway::start().await;
    let moments = t.ca.client_uri(MOMENTS);
    let mut content = t.content(Some(&moments)).await;
    let body = super::data(10_000, 1);
    put(&mut content, "u1", "moments", "pic", &body, 4096)
        .await
        .expect("content role puts in its space");
    let (_, got) = get(&mut content, "u1", "moments", "pic", None)
        .await
        .expect("content role gets in its space");
    assert_eq!(got, body);

    let ops = t.ca.client_dns(OPS);
    key_status(&mut t.admin(Some(&ops)).await, "u1")
        .await
        .expect("ops role (DNS SAN identity) reads key status");

    let legal = t.ca.client_uri(LEGAL);
    let mut holds = t.holds(Some(&legal)).await;
    let hold = place_hold(&mut holds, "u1", "case-1")
        .await
        .expect("legal role places a hold");
    assert_eq!(hold.placed_by, LEGAL, "the hold names its principal");
    let deletion = t.ca.client_uri(DELETION);
    let mut erasure = t.erasure(Some(&deletion)).await;
    let pending = erase(&mut erasure, "u1")
        .await
        .expect("an erasure of a held user is recorded");
    assert_eq!(pending.state(), pb::ErasureState::PendingHold);
    holds
        .release_hold(pb::ReleaseHoldRequest {
            user_id: "u1".into(),
            case_ref: "case-1".into(),
        })
        .await
        .expect("legal role releases");
    erase(&mut erasure, "u1")
        .await
        .expect("erasure role erases");
}

async fn place_hold(
    client: &mut LegalHoldServiceClient<Channel>,
    user: &str,
    case: &str,
) -> Result<pb::LegalHold, tonic::Status> {
    client
        .place_hold(pb::PlaceHoldRequest {
            user_id: user.into(),
            case_ref: case.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_certificate_are_unauthenticated() {
    let t = TlsGateway::start().await;
    let other_ca = Ca::new("another CA");
    let cases: [(&str, Option<Leaf>); 3] = [
        ("no certificate", None),
        (
            "a certificate from another CA",
            Some(other_ca.client_uri(MOMENTS)),
        ),
        ("an expired certificate", Some(t.ca.expired_client(MOMENTS))),
    ];
    for (what, leaf) in &cases {
        let channel = t.channel(leaf.as_ref()).await;
        assert!(serving(channel.clone()).await, "{what}: health is open");
        let mut content = ContentServiceClient::new(channel.clone());
        let s = expect_reason(
            put(&mut content, "u1", "moments", "x", b"hello", 5).await,
            Code::Unauthenticated,
            "NO_CLIENT_CERTIFICATE",
            what,
        );
        if leaf.is_some() {
            assert!(
                s.message().contains("refused"),
                "{what}: the message says why: {s:?}"
            );
        }
        expect_reason(
            erase(&mut ErasureServiceClient::new(channel.clone()), "u1").await,
            Code::Unauthenticated,
            "NO_CLIENT_CERTIFICATE",
            what,
        );
        expect_reason(
            key_status(&mut KeyAdminServiceClient::new(channel), "u1").await,
            Code::Unauthenticated,
            "NO_CLIENT_CERTIFICATE",
            what,
        );
    }
    let denied = denials(&t).await;
    for method in [
        "/sealgate.v1.ContentService/PutObject",
        "/sealgate.v1.ErasureService/EraseUser",
        "/sealgate.v1.KeyAdminService/KeyStatus",
    ] {
        let n = denied
            .iter()
            .filter(|(p, d)| p == "anonymous" && *d == format!("{method}: NO_CLIENT_CERTIFICATE"))
            .count();
        assert_eq!(n, 3, "{method} refused once per case: {denied:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_calling_another_roles_method_is_denied() {
    let t = TlsGateway::start().await;
    let moments = t.ca.client_uri(MOMENTS);
    let deletion = t.ca.client_uri(DELETION);
    let ops = t.ca.client_dns(OPS);
    let legal = t.ca.client_uri(LEGAL);
    let stranger = t.ca.client_uri(STRANGER);
    // u1 has an object, so that an erasure would show.
    put(
        &mut t.content(Some(&moments)).await,
        "u1",
        "moments",
        "x",
        b"kept",
        4,
    )
    .await
    .expect("put u1's object");
    for (what, leaf) in [
        ("content erasing", &moments),
        ("ops erasing", &ops),
        ("legal erasing", &legal),
        ("an unknown identity erasing", &stranger),
    ] {
        let s = expect_reason(
            erase(&mut t.erasure(Some(leaf)).await, "u1").await,
            Code::PermissionDenied,
            "ROLE_REQUIRED",
            what,
        );
        assert!(s.message().contains("erasure"), "{what}: {s:?}");
        if what == "an unknown identity erasing" {
            // It is told why it holds no role.
            assert!(
                s.message()
                    .contains("identity spiffe://app/stranger has no [[principals]] entry"),
                "{s:?}"
            );
        }
    }
    for (what, leaf) in [
        ("content placing a hold", &moments),
        ("erasure placing a hold", &deletion),
        ("ops placing a hold", &ops),
    ] {
        let s = expect_reason(
            place_hold(&mut t.holds(Some(leaf)).await, "u1", "case-1").await,
            Code::PermissionDenied,
            "ROLE_REQUIRED",
            what,
        );
        assert!(s.message().contains("legal"), "{what}: {s:?}");
    }
    for (what, leaf) in [("erasure reading", &deletion), ("ops reading", &ops)] {
        expect_reason(
            get(&mut t.content(Some(leaf)).await, "u1", "moments", "x", None).await,
            Code::PermissionDenied,
            "ROLE_REQUIRED",
            what,
        );
    }
    expect_reason(
        key_status(&mut t.admin(Some(&moments)).await, "u1").await,
        Code::PermissionDenied,
        "ROLE_REQUIRED",
        "content reading key status",
    );
    let denied = denials(&t).await;
    for (principal, method) in [
        (MOMENTS, "ErasureService/EraseUser"),
        (OPS, "ErasureService/EraseUser"),
        (LEGAL, "ErasureService/EraseUser"),
        (STRANGER, "ErasureService/EraseUser"),
        (MOMENTS, "LegalHoldService/PlaceHold"),
        (DELETION, "LegalHoldService/PlaceHold"),
        (OPS, "LegalHoldService/PlaceHold"),
        (DELETION, "ContentService/GetObject"),
        (OPS, "ContentService/GetObject"),
        (MOMENTS, "KeyAdminService/KeyStatus"),
    ] {
        let detail = format!("/sealgate.v1.{method}: ROLE_REQUIRED");
        assert!(
            denied.iter().any(|(p, d)| p == principal && *d == detail),
            "{principal} {detail} not in {denied:?}"
        );
    }
    // Nothing was erased by the refused calls: KeyStatus (which answers
    // for erased users too) says u1 is not erased, and u1's object reads
    // back.
    let status = t
        .admin(Some(&ops))
        .await
        .key_status(pb::KeyStatusRequest {
            user_id: "u1".into(),
            ..Default::default()
        })
        .await
        .expect("KeyStatus")
        .into_inner();
    assert!(!status.erased, "u1 erased by a refused call: {status:?}");
    let (_, kept) = get(
        &mut t.content(Some(&moments)).await,
        "u1",
        "moments",
        "x",
        None,
    )
    .await
    .expect("u1's object reads back");
    assert_eq!(kept, b"kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_client_outside_its_spaces_is_denied() {
    let t = TlsGateway::start().await;
    let moments = t.ca.client_uri(MOMENTS);
    let mut c = t.content(Some(&moments)).await;
    put(&mut c, "u1", "moments", "a", b"ok", 2)
        .await
        .expect("own space");
    let denied = |r: Result<_, tonic::Status>, what: &str| {
        let s = expect_reason(r, Code::PermissionDenied, "SPACE_NOT_ALLOWED", what);
        assert!(s.message().contains("channels"), "{what}: {s:?}");
    };
    denied(
        put(&mut c, "u1", "channels", "a", b"no", 2).await.map(drop),
        "PutObject",
    );
    denied(
        get(&mut c, "u1", "channels", "a", None).await.map(drop),
        "GetObject",
    );
    // No link to another space's object either.
    denied(
        c.sign_read(pb::SignReadRequest {
            object: Some(obj("u1", "channels", "a")),
            ..Default::default()
        })
        .await
        .map(drop),
        "SignRead",
    );
    denied(
        c.head_object(pb::HeadObjectRequest {
            object: Some(obj("u1", "channels", "a")),
        })
        .await
        .map(drop),
        "HeadObject",
    );
    denied(
        c.delete_object(pb::DeleteObjectRequest {
            object: Some(obj("u1", "channels", "a")),
            if_match: String::new(),
        })
        .await
        .map(drop),
        "DeleteObject",
    );
    denied(
        c.list_objects(pb::ListObjectsRequest {
            user_id: "u1".into(),
            space: "channels".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .map(drop),
        "ListObjects",
    );
    denied(
        super::put_item(&mut c, "u1", "channels", "c1", b"comment")
            .await
            .map(drop),
        "PutItem",
    );
    denied(
        super::get_items(&mut c, "u1", "channels", &["c1"])
            .await
            .map(drop),
        "GetItems",
    );
    // A feed spans spaces: one ref outside the caller's spaces refuses it.
    denied(
        c.batch_get_items(pb::BatchGetItemsRequest {
            refs: vec![obj("u1", "moments", "a"), obj("u2", "channels", "b")],
        })
        .await
        .map(drop),
        "BatchGetItems",
    );
    // A space that does not exist is not allowed either: no caller learns
    // which spaces are configured.
    denied(
        get(&mut c, "u1", "channels", "a", None).await.map(drop),
        "GetObject again",
    );
    let s = expect_reason(
        get(&mut c, "u1", "nope", "a", None).await.map(drop),
        Code::PermissionDenied,
        "SPACE_NOT_ALLOWED",
        "unknown space",
    );
    assert!(s.message().contains("nope"), "{s:?}");
    let batch = c
        .batch_get_items(pb::BatchGetItemsRequest {
            refs: vec![obj("u1", "moments", "a")],
        })
        .await
        .expect("a feed within its spaces");
    assert_eq!(batch.into_inner().items.len(), 1);
    let denied = denials(&t).await;
    let spaces = denied
        .iter()
        .filter(|(p, d)| p == MOMENTS && d.starts_with("space "))
        .count();
    assert_eq!(
        spaces, 11,
        "every space refusal is on the record: {denied:?}"
    );
    assert!(denied.contains(&(
        MOMENTS.to_string(),
        "space \"nope\": SPACE_NOT_ALLOWED".to_string()
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_replaced_on_disk_are_used_without_a_restart() {
    let t = TlsGateway::start().await;
    let old_client = t.ca.client_uri(MOMENTS);
    let mut c = t.content(Some(&old_client)).await;
    put(&mut c, "u1", "moments", "a", b"before", 6)
        .await
        .expect("before the rotation");

    // A new CA signs a new server certificate and new client certificates;
    // the files are replaced while the server runs.
    let new_ca = Ca::new("rotated CA");
    let server = new_ca.server();
    replace_file(&t.tls.key, &server.key);
    replace_file(&t.tls.cert, &server.cert);
    replace_file(&t.tls.client_ca, &new_ca.pem);
    let new_client = new_ca.client_uri(MOMENTS);
    eventually(
        "the server presents the new certificate",
        Duration::from_secs(10),
        || async { t.channel_with(&new_ca, Some(&new_client)).await.is_ok() },
    )
    .await;
    let mut c = ContentServiceClient::new(
        t.channel_with(&new_ca, Some(&new_client))
            .await
            .expect("connect with the new CA"),
    );
    let (_, got) = get(&mut c, "u1", "moments", "a", None)
        .await
        .expect("a client certificate from the new CA");
    assert_eq!(got, b"before");
    assert!(
        t.channel_with(&t.ca, Some(&old_client)).await.is_err(),
        "the old server certificate is no longer presented"
    );
    // A client still holding a certificate of the old CA is refused.
    let old = ContentServiceClient::new(
        t.channel_with(&new_ca, Some(&old_client))
            .await
            .expect("handshake"),
    );
    expect_reason(
        get(&mut old.clone(), "u1", "moments", "a", None).await,
        Code::Unauthenticated,
        "NO_CLIENT_CERTIFICATE",
        "an old-CA client certificate after the rotation",
    );
}

/// The whole of an export as `client` (its bytes), or the status.
async fn export_as(
    t: &TlsGateway,
    client: &Leaf,
    user: &str,
    case: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut c = sealgate::api::pb::export_service_client::ExportServiceClient::new(
        t.channel(Some(client)).await,
    );
    let mut stream = c
        .export_user(pb::ExportUserRequest {
            user_id: user.into(),
            case_ref: case.into(),
            resume: None,
        })
        .await?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    Ok(bytes)
}

/// ExportUser splits by role: the user's own copy is the content role's,
/// a disclosure under a case the legal role's; each refused the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_the_content_roles_and_disclosure_the_legal_roles() {
    let t = TlsGateway::start().await;
    let moments = t.ca.client_uri(MOMENTS);
    let legal = t.ca.client_uri(LEGAL);
    let ops = t.ca.client_dns(OPS);
    put(
        &mut t.content(Some(&moments)).await,
        "u1",
        "moments",
        "pic",
        b"mine",
        4,
    )
    .await
    .unwrap();
    place_hold(&mut t.holds(Some(&legal)).await, "u1", "case-1")
        .await
        .unwrap();

    let own = export_as(&t, &moments, "u1", "").await.expect("own copy");
    assert!(own.windows(4).any(|w| w == b"mine"));
    let disclosed = export_as(&t, &legal, "u1", "case-1")
        .await
        .expect("disclosure under the holding case");
    assert!(disclosed.windows(4).any(|w| w == b"mine"));

    for (who, case, what) in [
        (&legal, "", "the legal role without a case"),
        (&moments, "case-1", "the content role with a case"),
        (&ops, "", "the ops role"),
    ] {
        expect_reason(
            export_as(&t, who, "u1", case).await,
            Code::PermissionDenied,
            "ROLE_REQUIRED",
            what,
        );
    }
}
