mod blob;
mod cli;
mod crypto;
mod gateway;
mod health;
mod s3env;
