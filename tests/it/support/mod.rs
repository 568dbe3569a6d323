//! Helpers every test module shares; the test modules beside this one
//! hold tests only.
//!
//! - [`host`]: free loopback ports, whether this process is root.
//! - [`launch`]: the one launcher of the servers the tests start (child
//!   processes under a guard shell, in-process servers on loopback), used
//!   by [`pgenv`] (PostgreSQL), [`s3env`] (moto's S3, and plain S3
//!   clients), [`s3s_env`] (s3s-fs) and [`proxy`] (fault proxies).
//! - [`serve`]: the real binary (run to its end, or serving: one builder);
//!   [`metrics`]: its Prometheus endpoint.
//! - [`wait`]: [`eventually`] (and `eventually_explained`), the one polling helper.
//! - [`gateway`]: the harness of gateways in this process (backends,
//!   storage accessors, calls, status checks, mTLS).
//! - [`keys_db`]: plain SQL on a gateway's SQLite key store.
//! - [`kms_env`]: moto's KMS; [`pki`]: certificates; [`mounts`]: full and
//!   failing disks (root only).
//!
//! Modules that the benches include as well (`benches/*.rs`, by
//! `#[path]`) name their siblings `super::…`, never `crate::…`.

pub mod gateway;
pub mod host;
pub mod keys_db;
pub mod kms_env;
pub mod launch;
pub mod metrics;
pub mod mounts;
pub mod pgenv;
pub mod pki;
pub mod proxy;
pub mod s3env;
pub mod s3s_env;
pub mod serve;
pub mod wait;

pub use wait::eventually;
