"""An independent reader of sealgate's export archives: Python's tarfile.

Usage: list_tar.py ARCHIVE DIR. Opens ARCHIVE strictly as POSIX (a bad
checksum or a truncated entry fails), extracts every member under DIR and
prints one JSON object: the members in archive order, each with its name,
type, size, mtime, mode, uid, gid, uname, gname and the SHA-256 of its
extracted bytes, and the parsed manifest.json.
"""
import hashlib
import json
import os
import sys
import tarfile


def main():
    archive, out = sys.argv[1], sys.argv[2]
    members = []
    with tarfile.open(archive, mode="r:", errorlevel=2) as tar:
        for m in tar:
            if not m.isreg():
                raise SystemExit(f"not a regular file: {m.name} (type {m.type!r})")
            data = tar.extractfile(m).read()
            members.append({
                "name": m.name,
                "size": m.size,
                "mtime": m.mtime,
                "mode": m.mode,
                "uid": m.uid,
                "gid": m.gid,
                "uname": m.uname,
                "gname": m.gname,
                "pax": bool(m.pax_headers),
                "sha256": hashlib.sha256(data).hexdigest(),
            })
        tar.extractall(out, filter="data")
    with open(os.path.join(out, "manifest.json"), "rb") as f:
        manifest = json.load(f)
    json.dump({"members": members, "manifest": manifest}, sys.stdout)


main()
