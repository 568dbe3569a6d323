#!/usr/bin/env python3
"""An independent reader of sealgate objects, format versions 1 and 2, both
suites (Cobblestone-256 and Cobblestone-SM4), written from FORMAT.md alone
with Python's `cryptography` package (OpenSSL's AES-GCM, SM4-GCM, SHA-2, SM3
and HMAC) and the standard library. HKDF-Expand, the C2SP chunked
encryption, the key slot, the identity and the metadata encodings are
written out here. A version-2 object's sealed digest is opened after the
body and must be the SHA-256 (hashlib) of the body's plaintext.

    open_object.py golden [DIR]
        Reads DIR/golden.toml (default: tests/golden beside this script's
        directory), unwraps the key chain, opens every golden object and
        checks its format version (the entry's `version`, 1 if absent),
        suite, metadata, plaintext and (version 2) stored digest, and
        checks every C2SP known
        answer (the derivation, the message re-sealed byte for byte, its
        opening). Prints `ok object NAME ...` / `ok kat SECTION ...` per
        item (`ok object NAME (SUITE, version V, N bytes)`), and `FAIL ...`
        for any that does not check; exits 0 only if
        every item checks.

    open_object.py open USER_KEY_HEX REGION SPACE PSEUDONYM_HEX OBJECT_ID FILE
        Opens one object with the user key of its key slot. Prints the
        result as JSON and exits 0, or prints `invalid: <reason>` and exits 1.

    open_object.py batch JOBS_JSON
        JOBS_JSON is a JSON list of {"name", "file", "user_key" (hex),
        "region", "space", "pseudonym" (hex), "object_id"}. Prints one JSON
        line per job: {"name", "ok": true, "version", "suite",
        "user_key_version", "content_type", "attributes" ([name, value]
        pairs), "plaintext_len", "plaintext_sha256", "stored_sha256" (the
        digest of version 2, equal to plaintext_sha256; null in version 1)}
        or {"name", "ok": false, "error"}. Exits 0 once every job has run.

    open_object.py deployment DATA_DIR REGION USER...
        Opens, from a gateway's data directory alone (FORMAT.md "Keys at
        rest": the keyring file, keys.db, and the filesystem store's
        objects/SPACE/PSEUDONYM/ID files), every object of each USER: the
        key suite from keys.db's meta, the pseudonym, each user key row and
        its KEK row unwrapped up from the keyring's master keys, then the
        object. Prints one JSON line per object: {"user", "space", "id",
        "key_suite", "pseudonym", "ok": true, "suite", "content_type",
        "plaintext_len", "plaintext_sha256", ...} or {..., "ok": false,
        "error"}. Exits 0 once every object has been tried.

Rejections say which part failed ("header: ...", "key slot: ...",
"metadata: ...", "body: ...", "digest: ..."): this is a test tool. The format requires a
gateway to report every integrity failure after parsing as one opaque
error, which sealgate does.
"""

import hashlib
import hmac as std_hmac
import json
import pathlib
import sys
import tomllib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

# FORMAT.md "Header layout", "Message layout", "Limits".
MAGIC = b"SEALGT"
FORMAT_VERSIONS = (1, 2)
FIXED_HEADER_LEN = 76
SALT_LEN = 24
COMMITMENT_LEN = 32
MESSAGE_HEADER_LEN = SALT_LEN + COMMITMENT_LEN
CHUNK_SIZE = 16384
TAG_LEN = 16
ENCRYPTED_CHUNK_LEN = CHUNK_SIZE + TAG_LEN
MAX_CHUNKS = 1 << 38
MAX_METADATA_LEN = 8192
MAX_IDENTITY_FIELD_LEN = 1024


class Invalid(Exception):
    pass


class Suite:
    def __init__(self, ident, name, aead_name, key_len, hash_alg):
        self.id = ident
        self.name = name
        self.aead_name = aead_name
        self.key_len = key_len
        self.hash_alg = hash_alg

    def seal(self, key, nonce, plaintext, aad):
        """AEAD.Seal: ciphertext || 16-byte tag."""
        if self.id == 1:
            return AESGCM(key).encrypt(nonce, plaintext, aad)
        enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        out = enc.update(plaintext) + enc.finalize()
        return out + enc.tag

    def open(self, key, nonce, sealed, aad):
        """AEAD.Open; raises InvalidTag unless the tag authenticates."""
        if len(sealed) < TAG_LEN:
            raise InvalidTag()
        if self.id == 1:
            return AESGCM(key).decrypt(nonce, sealed, aad)
        dec = Cipher(
            algorithms.SM4(key), modes.GCM(nonce, sealed[-TAG_LEN:])
        ).decryptor()
        dec.authenticate_additional_data(aad)
        return dec.update(sealed[:-TAG_LEN]) + dec.finalize()

    def hkdf_expand(self, prk, info, length):
        return hkdf_expand(self.hash_alg, prk, info, length)


# FORMAT.md "Suites", "Primitives".
SUITES = {
    1: Suite(1, "aes-256-gcm", b"AEAD_AES_256_GCM", 32, hashes.SHA512),
    2: Suite(2, "sm4-gcm", b"AEAD_SM4_GCM", 16, hashes.SM3),
}
SUITE_BY_NAME = {s.name: s for s in SUITES.values()}


def hmac(hash_alg, key, message):
    h = c_hmac.HMAC(key, hash_alg())
    h.update(message)
    return h.finalize()


def hkdf_expand(hash_alg, prk, info, length):
    """HKDF-Expand, RFC 5869 section 2.3 (no Extract: PRK is the key)."""
    hash_len = hash_alg.digest_size
    if length > 255 * hash_len:
        raise ValueError("HKDF-Expand: length too large")
    okm, t, counter = b"", b"", 1
    while len(okm) < length:
        t = hmac(hash_alg, prk, t + info + bytes([counter]))
        okm += t
        counter += 1
    return okm[:length]


def u32be(b):
    return int.from_bytes(b, "big")


def lp(x):
    if len(x) > 65535:
        raise ValueError("lp: field longer than 65535 bytes")
    return len(x).to_bytes(2, "big") + x


# FORMAT.md "Object identity": the format version is part of it.
def identity_encoding(version, region, space, pseudonym, object_id):
    if version not in FORMAT_VERSIONS:
        raise ValueError(f"format version {version}")
    fields = [f.encode("utf-8") for f in (region, space, object_id)]
    if any(len(f) > MAX_IDENTITY_FIELD_LEN for f in fields):
        raise ValueError("identity field longer than 1024 bytes")
    if len(pseudonym) != 32:
        raise ValueError("pseudonym is not 32 bytes")
    region_b, space_b, object_b = fields
    return (
        lp(b"sealgate/object")
        + lp(bytes([version]))
        + lp(region_b)
        + lp(space_b)
        + lp(pseudonym)
        + lp(object_b)
    )


# FORMAT.md "Pseudonyms and shards": the MAC is the deployment's key suite's.
def pseudonym(naming_key, user_id, key_suite=None):
    mac = hashes.SM3 if key_suite is not None and key_suite.id == 2 else hashes.SHA256
    return hmac(mac, naming_key, b"sealgate/v1/pseudonym\x00" + user_id.encode("utf-8"))


# FORMAT.md "Derivation".
def derive(suite, input_key, salt, context):
    info = (
        b"c2sp.org/chunked-encryption@v1+" + suite.aead_name + b"\x00" + salt + context
    )
    nk = suite.key_len
    okm = suite.hkdf_expand(input_key, info, nk + 44)
    return okm[:nk], okm[nk : nk + 12], okm[nk + 12 : nk + 44]


def chunk_nonce(base_nonce, i):
    """base nonce XOR (u32be(0) || u64be(i))."""
    return (int.from_bytes(base_nonce, "big") ^ i).to_bytes(12, "big")


def message_len(n):
    return MESSAGE_HEADER_LEN + n + TAG_LEN * (n // CHUNK_SIZE + 1)


# FORMAT.md "Header layout": the digest of version 2 is a message of the
# 32 bytes of a SHA-256.
SHA256_LEN = 32
DIGEST_MESSAGE_LEN = message_len(SHA256_LEN)
assert DIGEST_MESSAGE_LEN == 104


def plaintext_len(m):
    """FORMAT.md "Message layout": the plaintext length of an M-byte message."""
    if m < MESSAGE_HEADER_LEN:
        raise Invalid("message shorter than 56 bytes")
    body = m - MESSAGE_HEADER_LEN
    full, last = divmod(body, ENCRYPTED_CHUNK_LEN)
    if last < TAG_LEN:
        raise Invalid(f"no message is {m} bytes long (final chunk of {last} bytes)")
    if full >= MAX_CHUNKS:
        raise Invalid("too many chunks")
    return CHUNK_SIZE * full + last - TAG_LEN


def c2sp_seal(suite, input_key, context, salt, plaintext):
    if len(input_key) != 32 or len(salt) != SALT_LEN:
        raise ValueError("input key must be 32 bytes, salt 24")
    key, base, commitment = derive(suite, input_key, salt, context)
    out = salt + commitment
    n = len(plaintext) // CHUNK_SIZE + 1
    for i in range(n):
        piece = plaintext[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
        out += suite.seal(key, chunk_nonce(base, i), piece, b"")
    return out


def c2sp_open(suite, input_key, context, message):
    """FORMAT.md "Decryption rules", a whole message at once."""
    if len(input_key) != 32:
        raise Invalid("input key is not 32 bytes")
    if len(message) < MESSAGE_HEADER_LEN:
        raise Invalid("message shorter than 56 bytes")
    salt = message[:SALT_LEN]
    stored = message[SALT_LEN:MESSAGE_HEADER_LEN]
    key, base, commitment = derive(suite, input_key, salt, context)
    # Before any chunk is decrypted.
    if not std_hmac.compare_digest(commitment, stored):
        raise Invalid("commitment mismatch")
    n = plaintext_len(len(message)) // CHUNK_SIZE + 1
    out = bytearray()
    for i in range(n):
        start = MESSAGE_HEADER_LEN + ENCRYPTED_CHUNK_LEN * i
        chunk = message[start : start + ENCRYPTED_CHUNK_LEN]
        # The length arithmetic makes every chunk but the final one full and
        # the final one short; check it anyway.
        if (i < n - 1) != (len(chunk) == ENCRYPTED_CHUNK_LEN):
            raise Invalid(f"chunk {i} of {n} has {len(chunk)} bytes")
        try:
            out += suite.open(key, chunk_nonce(base, i), chunk, b"")
        except InvalidTag:
            raise Invalid(f"chunk {i} does not authenticate") from None
    return bytes(out)


# FORMAT.md "Key wrapping".
def unwrap(suite, wrapping_key, wrapped, aad):
    if len(wrapped) != 60:
        raise Invalid("wrapped key is not 60 bytes")
    if len(wrapping_key) != 32:
        raise Invalid("wrapping key is not 32 bytes")
    if suite.id == 2:
        key = hkdf_expand(hashes.SM3, wrapping_key, b"sealgate/v1/sm4-wrap", 16)
    else:
        key = wrapping_key
    try:
        out = suite.open(key, wrapped[:12], wrapped[12:], aad)
    except InvalidTag:
        raise Invalid("does not unwrap") from None
    if len(out) != 32:
        raise Invalid("unwrapped key is not 32 bytes")
    return out


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if len(self.data) - self.pos < n:
            raise Invalid("field runs past the end")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def lp(self):
        return self.take(u32be(self.take(2)))


def utf8(b):
    try:
        return b.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise Invalid("invalid UTF-8") from None


# FORMAT.md "Metadata".
def decode_metadata(data):
    if len(data) > MAX_METADATA_LEN:
        raise Invalid("metadata over 8192 bytes")
    r = Reader(data)
    content_type = utf8(r.lp())
    count = u32be(r.take(2))
    attributes = []
    previous = None
    for _ in range(count):
        name = r.lp()
        value = r.lp()
        if previous is not None and not previous < name:
            raise Invalid("attribute names not strictly ascending")
        previous = name
        attributes.append([utf8(name), utf8(value)])
    if r.pos != len(data):
        raise Invalid("trailing bytes")
    return content_type, attributes


# FORMAT.md "Parsing rules" and "Opening an object". `ident` is (region,
# space, pseudonym (32 bytes), object id); the identity encoding takes the
# header's format version.
def open_object(data, user_key, ident):
    if len(data) < FIXED_HEADER_LEN or data[:6] != MAGIC:
        raise Invalid("header: not a sealgate object")
    format_version = data[6]
    if format_version not in FORMAT_VERSIONS:
        raise Invalid(f"header: unsupported format version {format_version}")
    suite = SUITES.get(data[7])
    if suite is None:
        raise Invalid(f"header: unsupported suite {data[7]}")
    version = u32be(data[8:12])
    wrapped = data[12:72]
    m = u32be(data[72:76])
    if not message_len(0) <= m <= message_len(MAX_METADATA_LEN):
        raise Invalid(f"header: sealed metadata length {m}")
    if len(data) < FIXED_HEADER_LEN + m:
        raise Invalid("header: shorter than its sealed metadata")
    trailer = DIGEST_MESSAGE_LEN if format_version == 2 else 0
    if len(data) < FIXED_HEADER_LEN + m + trailer:
        raise Invalid("header: shorter than its sealed metadata and digest")
    sealed_metadata = data[FIXED_HEADER_LEN : FIXED_HEADER_LEN + m]
    body_end = len(data) - trailer
    body = data[FIXED_HEADER_LEN + m : body_end]
    sealed_digest = data[body_end:]
    identity = identity_encoding(format_version, *ident)
    try:
        dek = unwrap(suite, user_key, wrapped, identity)
    except Invalid as e:
        raise Invalid(f"key slot: {e}") from None
    try:
        metadata = c2sp_open(suite, dek, identity + lp(b"metadata"), sealed_metadata)
        content_type, attributes = decode_metadata(metadata)
    except Invalid as e:
        raise Invalid(f"metadata: {e}") from None
    try:
        plaintext = c2sp_open(suite, dek, identity, body)
    except Invalid as e:
        raise Invalid(f"body: {e}") from None
    stored_sha256 = None
    if format_version == 2:
        try:
            stored_sha256 = c2sp_open(suite, dek, identity + lp(b"digest"), sealed_digest)
        except Invalid as e:
            raise Invalid(f"digest: {e}") from None
        if len(stored_sha256) != SHA256_LEN:
            raise Invalid(f"digest: {len(stored_sha256)} bytes, not a SHA-256")
        if stored_sha256 != hashlib.sha256(plaintext).digest():
            raise Invalid("digest: not the SHA-256 of the plaintext")
    return {
        "version": format_version,
        "suite": suite.name,
        "user_key_version": version,
        "content_type": content_type,
        "attributes": attributes,
        "plaintext": plaintext,
        "stored_sha256": None if stored_sha256 is None else stored_sha256.hex(),
    }


def summary(opened):
    out = {k: v for k, v in opened.items() if k != "plaintext"}
    out["plaintext_len"] = len(opened["plaintext"])
    out["plaintext_sha256"] = hashlib.sha256(opened["plaintext"]).hexdigest()
    return out


def golden_plaintext(n):
    return bytes(i % 251 for i in range(n))


def check_golden(directory):
    """Every object and known answer of DIR/golden.toml; returns failures."""
    directory = pathlib.Path(directory)
    with open(directory / "golden.toml", "rb") as f:
        m = tomllib.load(f)
    failures = []

    def fail(what, why):
        failures.append(f"{what}: {why}")
        print(f"FAIL {what}: {why}")

    keys = m["keys"]
    h = bytes.fromhex
    # The key store's wraps are always suite 1's (FORMAT.md "Key wrapping").
    aes = SUITES[1]
    kek = unwrap(aes, h(keys["master_key"]), h(keys["wrapped_kek"]), keys["kek_aad"].encode())
    user_key = unwrap(
        aes, kek, h(keys["wrapped_user_key"]), keys["user_key_aad"].encode()
    )
    p = pseudonym(h(keys["naming_key"]), keys["user_id"])
    if p.hex() != keys["pseudonym"]:
        fail("keys", f"pseudonym {p.hex()} != {keys['pseudonym']}")

    for name, o in m["objects"].items():
        what = f"object {name}"
        data = (directory / o["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != o["object_sha256"]:
            fail(what, "file differs from object_sha256")
            continue
        suite = SUITE_BY_NAME.get(o.get("suite"))
        if suite is None:
            fail(what, f"manifest suite {o.get('suite')!r}")
            continue
        # Version 1's entries may leave the version out.
        version = o.get("version", 1)
        if version not in FORMAT_VERSIONS:
            fail(what, f"manifest version {version!r}")
            continue
        ident = (o["region"], o["space"], p, o["object_id"])
        identity = identity_encoding(version, *ident)
        if identity.hex() != o["identity_encoding"]:
            fail(what, "identity encoding differs")
            continue
        try:
            opened = open_object(data, user_key, ident)
        except Invalid as e:
            fail(what, f"rejected: {e}")
            continue
        plaintext = opened["plaintext"]
        expected = {
            "version": version,
            "suite": suite.name,
            "user_key_version": keys["user_key_version"],
            "content_type": o["content_type"],
            "attributes": sorted([k, v] for k, v in o["attributes"].items()),
            "plaintext_len": o["plaintext_len"],
            "plaintext_sha256": o["plaintext_sha256"],
            "stored_sha256": o["plaintext_sha256"] if version == 2 else None,
        }
        got = summary(opened)
        if got != expected:
            fail(what, f"opened as {got}, expected {expected}")
        elif plaintext != golden_plaintext(o["plaintext_len"]):
            fail(what, "plaintext is not the golden pattern")
        else:
            print(f"ok object {name} ({suite.name}, version {version}, {len(plaintext)} bytes)")

    for section, kat in m.items():
        if not (isinstance(kat, dict) and section.startswith("c2sp_") and "file" in kat):
            continue
        what = f"kat {section}"
        suite = SUITE_BY_NAME.get(kat.get("suite"))
        if suite is None:
            fail(what, f"manifest suite {kat.get('suite')!r}")
            continue
        key, salt, context = h(kat["key"]), h(kat["salt"]), h(kat["context"])
        stored = (directory / kat["file"]).read_bytes()
        plaintext = golden_plaintext(kat["plaintext_len"])
        aead_key, base_nonce, commitment = derive(suite, key, salt, context)
        derived = [aead_key.hex(), base_nonce.hex(), commitment.hex()]
        recorded = [kat["aead_key"], kat["base_nonce"], kat["commitment"]]
        if derived != recorded:
            fail(what, f"derivation {derived} != {recorded}")
        elif hashlib.sha256(stored).hexdigest() != kat["message_sha256"]:
            fail(what, "file differs from message_sha256")
        elif c2sp_seal(suite, key, context, salt, plaintext) != stored:
            fail(what, "re-sealed message differs")
        else:
            try:
                if c2sp_open(suite, key, context, stored) != plaintext:
                    fail(what, "opens to another plaintext")
                else:
                    print(f"ok kat {section} ({suite.name}, {len(stored)} bytes)")
            except Invalid as e:
                fail(what, f"rejected: {e}")
    return failures


def open_job(job):
    ident = (job["region"], job["space"], bytes.fromhex(job["pseudonym"]), job["object_id"])
    data = pathlib.Path(job["file"]).read_bytes()
    return open_object(data, bytes.fromhex(job["user_key"]), ident)


def read_keyring(path):
    """FORMAT.md "Keyring file": the naming key and the master keys."""
    naming, masters = None, {}
    for line in pathlib.Path(path).read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0] == "naming" and len(fields) == 2:
            naming = bytes.fromhex(fields[1])
        elif fields[0] == "master" and len(fields) == 3:
            masters[int(fields[1])] = bytes.fromhex(fields[2])
        else:
            raise Invalid(f"keyring: bad line {line!r}")
    if naming is None or not masters:
        raise Invalid("keyring: no naming key or no master key")
    return naming, masters


def kek_aad(shard, version):
    return b"sealgate/v1/kek" + shard.to_bytes(4, "big") + version.to_bytes(4, "big")


def user_key_aad(pseud, version, shard, kek_version):
    return (
        b"sealgate/v1/user-key"
        + pseud
        + version.to_bytes(4, "big")
        + shard.to_bytes(4, "big")
        + kek_version.to_bytes(4, "big")
    )


def open_deployment(data_dir, region, users):
    """Every object of `users` in `data_dir`, unwrapped from the keyring up."""
    import sqlite3

    data_dir = pathlib.Path(data_dir)
    naming, masters = read_keyring(data_dir / "keyring")
    db = sqlite3.connect(f"file:{data_dir / 'keys.db'}?mode=ro", uri=True)
    row = db.execute("SELECT value FROM meta WHERE key = 'key_suite'").fetchone()
    key_suite = SUITE_BY_NAME[row[0]] if row else SUITES[1]
    results = []
    for user in users:
        pseud = pseudonym(naming, user, key_suite)
        for space_dir in sorted((data_dir / "objects").iterdir()):
            owner = space_dir / pseud.hex()
            if not space_dir.is_dir() or not owner.is_dir():
                continue
            for path in sorted(owner.iterdir()):
                result = {
                    "user": user,
                    "space": space_dir.name,
                    "id": path.name,
                    "key_suite": key_suite.name,
                    "pseudonym": pseud.hex(),
                }
                try:
                    data = path.read_bytes()
                    version = u32be(data[8:12])
                    found = db.execute(
                        "SELECT shard, kek_version, wrapped FROM user_keys "
                        "WHERE pseudonym = ? AND version = ?",
                        (pseud.hex(), version),
                    ).fetchone()
                    if found is None:
                        raise Invalid(f"no user key version {version}")
                    shard, kek_version, wrapped_user_key = found
                    master_version, wrapped_kek = db.execute(
                        "SELECT master_version, wrapped FROM keks "
                        "WHERE shard = ? AND version = ?",
                        (shard, kek_version),
                    ).fetchone()
                    kek = unwrap(
                        key_suite,
                        masters[master_version],
                        bytes(wrapped_kek),
                        kek_aad(shard, kek_version),
                    )
                    user_key = unwrap(
                        key_suite,
                        kek,
                        bytes(wrapped_user_key),
                        user_key_aad(pseud, version, shard, kek_version),
                    )
                    ident = (region, space_dir.name, pseud, path.name)
                    result.update({"ok": True, **summary(open_object(data, user_key, ident))})
                except Invalid as e:
                    result.update({"ok": False, "error": str(e)})
                results.append(result)
    return results


def main(argv):
    if len(argv) >= 2 and argv[1] == "golden" and len(argv) <= 3:
        default = pathlib.Path(__file__).resolve().parent.parent / "golden"
        failures = check_golden(argv[2] if len(argv) == 3 else default)
        if failures:
            print(f"{len(failures)} failed")
            return 1
        print("all ok")
        return 0
    if len(argv) == 8 and argv[1] == "open":
        _, _, key, region, space, pseud, object_id, path = argv
        job = {
            "file": path,
            "user_key": key,
            "region": region,
            "space": space,
            "pseudonym": pseud,
            "object_id": object_id,
        }
        try:
            print(json.dumps(summary(open_job(job))))
            return 0
        except Invalid as e:
            print(f"invalid: {e}")
            return 1
    if len(argv) == 3 and argv[1] == "batch":
        with open(argv[2]) as f:
            jobs = json.load(f)
        for job in jobs:
            try:
                result = {"name": job["name"], "ok": True, **summary(open_job(job))}
            except Invalid as e:
                result = {"name": job["name"], "ok": False, "error": str(e)}
            print(json.dumps(result))
        return 0
    if len(argv) >= 4 and argv[1] == "deployment":
        for result in open_deployment(argv[2], argv[3], argv[4:]):
            print(json.dumps(result))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
