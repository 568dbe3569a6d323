//! Gateway tests: real gRPC over a loopback socket on port 0, against a
//! server started in-process on a fresh data directory (the harness is
//! `crate::support::gateway`).
//!
//! Most tests are backend-generic: written once as a plain `async fn` and
//! listed in [`backend_tests!`], which runs each against the filesystem
//! store (`…::fs::name`), against S3 on the shared moto server
//! (`…::s3::name`) and on an s3s-fs server of the test's own
//! (`…::s3s::name`). Tests reach stored objects only through the
//! [`TestGateway`] storage accessors, which know where each backend keeps
//! them.

/// Generates, for each backend-generic test `async fn name()` of the calling
/// module, the tests `fs::name`, `s3::name` (moto) and `s3s::name`
/// (s3s-fs), which run it with gateways started on that backend (see
/// [`with_backend`]).
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        backend_tests!(@on fs, Fs, "The tests against the filesystem store.", $($name),+);
        backend_tests!(@on s3, S3, "The tests against S3 (moto).", $($name),+);
        backend_tests!(
            @on s3s, S3s, "The tests against a second S3 implementation (s3s-fs).", $($name),+
        );
    };
    (@on $module:ident, $kind:ident, $doc:literal, $($name:ident),+) => {
        #[doc = $doc]
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::gateway::with_backend(
                        $crate::support::gateway::BackendKind::$kind,
                        super::$name(),
                    )
                    .await;
                }
            )+
        }
    };
}

/// Generates, for each named test `async fn name()` of the calling module,
/// the test `pg::name`: gateways it starts on a new data directory keep
/// their keys in a fresh PostgreSQL database (objects on the filesystem).
macro_rules! pg_tests {
    ($($name:ident),+ $(,)?) => {
        /// The tests with a PostgreSQL key store.
        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::gateway::with_pg_key_store(super::$name()).await;
                }
            )+
        }
    };
}

/// Generates, for each test `async fn name()` of the calling module,
/// `sqlite::name` (the embedded key store) and `pg::name` (a PostgreSQL
/// one), both on the filesystem object store.
macro_rules! key_store_tests {
    ($($name:ident),+ $(,)?) => {
        /// The tests on the embedded SQLite key store.
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name().await;
                }
            )+
        }
        pg_tests!($($name),+);
    };
}

mod at_rest;
mod audit;
mod bad_input;
mod crash;
mod declared_size;
mod decommission;
mod deletion;
mod digest;
mod erasure;
mod erasure_holds;
mod export;
mod feeds;
mod finish;
mod holds;
mod holds_preserve;
mod http_reads;
mod jobs;
mod kek_rotation;
mod key_store_faults;
mod kms;
mod limits;
mod limits_flood;
mod limits_timeouts;
mod master_rotation;
mod mtls;
mod preconditions;
mod raw_disk;
mod rewrap;
mod roundtrip;
mod suites;
mod user_key_rotation;
mod wire;

// What every test module takes through `use super::*`: the harness and the
// types its calls speak.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sealgate::api::pb;
use sealgate::api::pb::content_service_client::ContentServiceClient;
use sealgate::api::pb::erasure_service_client::ErasureServiceClient;
use sealgate::api::pb::key_admin_service_client::KeyAdminServiceClient;
use sealgate::config::Config;
use tonic::transport::Channel;
use tonic::Status;

use crate::support::eventually;
use crate::support::gateway::*;
use crate::support::s3env;
