//! The gateway harness: gateways started in this process on a fresh data
//! directory, real gRPC over a loopback socket on port 0.
//!
//! A test chooses no backend: [`with_backend`] (which the gateway tests'
//! `backend_tests!` wraps around each test) makes the gateways it starts
//! use the filesystem store, S3 on the shared moto server or an s3s-fs
//! server of the test's own, and [`with_pg_key_store`] keeps their keys in
//! PostgreSQL. Tests reach stored objects only through the storage
//! accessors ([`storage`]), which know where each backend keeps them.
//!
//! - [`backend`]: which store and key store the gateways of a test use.
//! - [`server`]: [`TestGateway`], started, restarted, stopped; its clients.
//! - [`storage`]: what a gateway stored, below the API.
//! - [`calls`]: ContentService calls; [`admin`]: erasure, keys, jobs,
//!   audit, health.
//! - [`status`]: what every error status must carry.
//! - [`tls`]: a gateway with mTLS and the tests' principals.

pub mod admin;
pub mod backend;
pub mod calls;
pub mod server;
pub mod status;
pub mod storage;
pub mod tls;

pub use admin::*;
pub use backend::*;
pub use calls::*;
pub use server::*;
pub use status::*;
pub use storage::*;
