"""Stable ids of paths (no imports beyond hashlib: the CLI computes them before anything loads)."""

import hashlib


def file_id_for(path: str) -> str:
    """The stable id of a file path (``file_id`` in results, ``msearch show FILE_ID``)."""
    return hashlib.blake2b(path.encode(), digest_size=8).hexdigest()
