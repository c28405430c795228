"""The control API's guard: a bearer token kept in the data dir, and the configured roots."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from msearch.errors import Forbidden, Unauthorized


def ensure_token(settings) -> str:
    """The data dir's API token, created on first use, readable by its owner only (0600).

    Written to a private temporary file and linked into place, so that replicas starting
    together all read the one complete token.
    """
    path: Path = settings.token_path
    if path.exists():
        return path.read_text().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it first: theirs is the token
    finally:
        tmp.unlink()
    return path.read_text().strip()


def rotate_token(settings) -> str:
    """Replace the data dir's API token with a new one (atomically); the old one stops working
    at the next request (servers read the file again when it changes)."""
    path: Path = settings.token_path
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    os.replace(tmp, path)
    return path.read_text().strip()


class TokenFile:
    """The data dir's token as it is on disk now: read again whenever the file changes (a
    rotation takes effect at once, in every replica)."""

    def __init__(self, settings):
        self.settings = settings
        self._seen: tuple | None = None
        self._token = ensure_token(settings)

    def __call__(self) -> str:
        try:
            st = os.stat(self.settings.token_path)
        except OSError:
            return self._token
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen:
            self._token = self.settings.token_path.read_text().strip()
            self._seen = key
        return self._token


def check_bearer(authorization: str | None, token: str) -> None:
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given or \
            not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode()):
        raise Unauthorized("this request needs the API token: Authorization: Bearer <token> "
                           "(the token is in the data dir's api_token file)")


def inside_roots(path: str, roots: tuple[str, ...]) -> str:
    """``path`` made absolute (symlinks resolved), if it lies inside one of ``roots``."""
    if not roots:
        raise Forbidden("no folders are configured (MSEARCH_ROOTS): the control API accepts no paths")
    if not isinstance(path, str) or not path or "\x00" in path:
        raise Forbidden("not a usable path")
    try:
        path.encode("utf-8")
        resolved = os.path.realpath(os.path.expanduser(path))
    except (UnicodeEncodeError, OSError, ValueError) as e:
        raise Forbidden(f"not a usable path ({e})") from e
    for root in roots:
        real_root = os.path.realpath(root)
        if resolved == real_root or resolved.startswith(real_root.rstrip("/") + "/"):
            return resolved
    raise Forbidden(f"{path} is outside the folders msearch serves (MSEARCH_ROOTS)")
