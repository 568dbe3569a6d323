//! Durable background jobs: work recorded in the key store that survives
//! restarts. Today: erasure garbage collection.

pub mod gc;
