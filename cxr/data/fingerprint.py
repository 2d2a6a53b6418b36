"""What a source file is: a quick stat record and a hash of its bytes, so caches notice changed content.

A file's *stat record* (size, mtime, inode, ctime, all in integer units) is checked first and costs one
``stat`` call; only when it differs is the file read again and its content hash compared. A file
rewritten with the same size and a restored mtime still gets a new ctime (which user programs cannot
set), so it is re-hashed and, if its bytes differ, treated as changed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def stat_record(path: str | Path) -> list[int] | None:
    """[size, mtime_ns, inode, ctime_ns] of ``path`` (symlinks followed), or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ino), int(st.st_ctime_ns)]


def content_hash(path: str | Path) -> str:
    """BLAKE2b (128-bit) of the file's bytes as 32 hex digits; "" when it cannot be read (missing, no permission).

    A special file (FIFO, device) is not read, so a FIFO cannot block: it hashes to "".
    """
    try:
        if not Path(path).is_file():
            return ""
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError:
        return ""
    return h.hexdigest()


def fingerprint(path: str | Path) -> dict:
    """``{"stat": stat_record(path), "hash": content_hash(path)}``; stat first, so a change while hashing
    shows as a stat mismatch next time rather than being missed."""
    return {"stat": stat_record(path), "hash": content_hash(path)}


def unchanged(path: str | Path, record: dict) -> tuple[bool, dict]:
    """Whether ``path`` still holds the content ``record`` (a :func:`fingerprint`) describes.

    Returns (same content, the current fingerprint): the stat record alone decides when it matches;
    otherwise the file is re-hashed, so a touched or copied file with the same bytes is unchanged.
    A file that is missing or unreadable (hash "") never counts as unchanged.
    """
    stat = stat_record(path)
    if stat is not None and stat == record.get("stat") and record.get("hash"):
        return True, record
    current = {"stat": stat, "hash": content_hash(path)}
    return bool(current["hash"]) and current["hash"] == record.get("hash"), current
