mod crypto;
