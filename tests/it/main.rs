mod blob;
mod crypto;
mod gateway;
