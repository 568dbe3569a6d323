//! Standard gRPC health checking and server reflection.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::gateway::TestGateway;

#[tokio::test]
async fn health_reports_every_service_serving() {
    let gw = TestGateway::start().await;
    let channel = tonic::transport::Channel::from_shared(gw.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in [
        "sealgate.v1.ContentService",
        "sealgate.v1.ErasureService",
        "sealgate.v1.KeyAdminService",
        "sealgate.v1.LegalHoldService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

/// The service names reflection lists, through the v1 or v1alpha protocol
/// (the two have the same messages under different packages).
macro_rules! listed_services {
    ($version:ident, $endpoint:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        let channel = tonic::transport::Channel::from_shared($endpoint)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let response = ServerReflectionClient::new(channel)
            .server_reflection_info(futures_util::stream::iter([request]))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response");
        };
        list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
    }};
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    let gw = TestGateway::start().await;
    for names in [
        listed_services!(v1, gw.endpoint()),
        listed_services!(v1alpha, gw.endpoint()),
    ] {
        for expected in [
            "sealgate.v1.ContentService",
            "sealgate.v1.ErasureService",
            "sealgate.v1.KeyAdminService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }
}

/// Readiness follows the object store: NOT_SERVING while S3 does not
/// answer, SERVING again when it is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_s3_away_and_back() {
    use crate::support::proxy::FaultProxy;
    use crate::support::s3env;
    use std::time::Duration;

    let moto = s3env::shared();
    let bucket = s3env::bucket_name();
    s3env::create_bucket(&moto.endpoint(), &bucket, s3env::REGION, false).await;
    let proxy = FaultProxy::start(moto.addr).await;
    // The gateway reaches S3 only through the proxy.
    let tmp = tempfile::tempdir().unwrap();
    let mut config = crate::support::gateway::config(tmp.path());
    crate::support::gateway::Backend::S3 {
        endpoint: proxy.endpoint(),
        bucket,
    }
    .configure(&mut config);
    config.server.health_probe_seconds = 1;
    let mut gw = crate::support::gateway::TestGateway::start_config(config).await;
    let channel = gw.channel().await;
    let health = HealthClient::new(channel);
    let status = |service: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
        }
    };
    assert_eq!(status("").await, ServingStatus::Serving as i32);

    proxy.set_up(false);
    eventually("health turns NOT_SERVING with S3 away", || async {
        status("").await == ServingStatus::NotServing as i32
            && status("sealgate.v1.ContentService").await == ServingStatus::NotServing as i32
    })
    .await;

    proxy.set_up(true);
    eventually("health turns SERVING with S3 back", || async {
        status("").await == ServingStatus::Serving as i32
            && status("sealgate.v1.ContentService").await == ServingStatus::Serving as i32
    })
    .await;

    gw.stop().await;

    async fn eventually<F, Fut>(what: &str, cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::support::eventually(what, Duration::from_secs(60), cond).await;
    }
}

/// Readiness follows the filesystem store too: its directory gone (an
/// unmounted volume), NOT_SERVING; back, SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_object_directory_away_and_back() {
    let tmp = tempfile::tempdir().unwrap();
    let config = crate::support::gateway::config(&tmp.path().join("data"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sealgate::server::run(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel);
    let serving = || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: "sealgate.v1.ContentService".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status
                == ServingStatus::Serving as i32
        }
    };
    assert!(serving().await);
    let objects = tmp.path().join("data").join("objects");
    let away = tmp.path().join("objects-away");
    std::fs::rename(&objects, &away).unwrap();
    crate::support::eventually(
        "health turns NOT_SERVING without the object directory",
        std::time::Duration::from_secs(30),
        || async { !serving().await },
    )
    .await;
    std::fs::rename(&away, &objects).unwrap();
    crate::support::eventually(
        "health turns SERVING with the object directory back",
        std::time::Duration::from_secs(30),
        || async { serving().await },
    )
    .await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
