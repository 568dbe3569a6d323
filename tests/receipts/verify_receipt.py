#!/usr/bin/env python3
"""An independent verifier of sealgate erasure receipts, written from
FORMAT.md ("Erasure receipts") alone, with `cryptography`'s Ed25519.

    verify_receipt.py PUBLIC_KEYS_FILE RECEIPT_FILE

PUBLIC_KEYS_FILE holds lines `<key id> <hex public key>`. On success prints
the decoded fields as JSON and exits 0; otherwise prints one line
`invalid: <reason>` and exits 1.
"""

import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAGIC = b"sealgate/v1/erasure-receipt\x00"
SIG_LEN = 64


class Invalid(Exception):
    pass


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n, field):
        if len(self.data) - self.pos < n:
            raise Invalid(f"truncated in {field}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, field):
        return struct.unpack(">H", self.take(2, field))[0]

    def u32(self, field):
        return struct.unpack(">I", self.take(4, field))[0]

    def i64(self, field):
        v = struct.unpack(">q", self.take(8, field))[0]
        if v < 0:
            raise Invalid(f"negative {field}")
        return v

    def lp(self, field):
        return self.take(self.u16(field), field)


def key_id(public_key):
    return hashlib.sha256(public_key).digest()[:8].hex()


def decode(encoding):
    r = Reader(encoding)
    if r.take(len(MAGIC), "magic") != MAGIC:
        raise Invalid("bad magic")
    try:
        deployment = r.lp("deployment id").decode("utf-8")
        region = r.lp("region").decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("text field not UTF-8")
    pseudonym = r.take(32, "pseudonym")
    erased_at = r.i64("erased at")
    n = r.u32("count")
    versions = [r.u32("versions") for _ in range(n)]
    if any(a >= b for a, b in zip(versions, versions[1:])):
        raise Invalid("versions not strictly ascending")
    horizon = r.i64("backup horizon")
    kid = r.lp("key id")
    if not kid or any(b < 0x21 or b > 0x7E for b in kid):
        raise Invalid("key id not printable ASCII")
    if r.pos != len(encoding):
        raise Invalid(f"{len(encoding) - r.pos} trailing bytes")
    return {
        "deployment_id": deployment,
        "region": region,
        "pseudonym": pseudonym.hex(),
        "erased_at_ms": erased_at,
        "destroyed_versions": versions,
        "backup_horizon_ms": horizon,
        "key_id": kid.decode("ascii"),
    }


def load_keys(text):
    keys = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kid, hexkey = line.split()
        raw = bytes.fromhex(hexkey)
        if len(raw) != 32 or key_id(raw) != kid:
            raise Invalid(f"public key {kid} is not its id's key")
        keys[kid] = raw
    return keys


def verify(keys, data):
    if len(data) < SIG_LEN:
        raise Invalid("truncated in signature")
    encoding, signature = data[:-SIG_LEN], data[-SIG_LEN:]
    fields = decode(encoding)
    raw = keys.get(fields["key_id"])
    if raw is None:
        raise Invalid(f"no public key {fields['key_id']}")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, encoding)
    except InvalidSignature:
        raise Invalid("bad signature")
    return fields


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1]) as f:
            keys = load_keys(f.read())
        with open(sys.argv[2], "rb") as f:
            data = f.read()
        fields = verify(keys, data)
    except Invalid as e:
        print(f"invalid: {e}")
        return 1
    print(json.dumps(fields, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
