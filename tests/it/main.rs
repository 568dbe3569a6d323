//! The integration tests: one binary. `support/` holds the helpers (the
//! servers the tests start, the real binary, the gateway harness); every
//! other module is a subject's tests.

mod support;

mod backup;
mod bench;
mod blob;
mod cli;
mod crypto;
mod damage;
mod data_dir_lock;
mod fuzz_seeds;
mod gateway;
mod health;
mod identity;
mod kek_batches;
mod keystore;
mod layering;
mod metrics;
mod parser_regressions;
mod pg_outage;
mod pg_tls;
mod receipts;
mod replicas;
mod residency;
mod s3_faults;
mod shutdown;
mod startup;
mod telemetry;
