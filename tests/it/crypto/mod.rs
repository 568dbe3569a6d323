//! Crypto core tests.
