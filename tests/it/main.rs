mod blob;
mod cli;
mod crypto;
mod gateway;
mod health;
mod residency;
mod s3_faults;
mod s3env;
