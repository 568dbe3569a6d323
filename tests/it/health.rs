//! Standard gRPC health checking and server reflection.

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::gateway::TestGateway;

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
