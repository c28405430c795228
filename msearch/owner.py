"""One owner per data dir: an exclusive lock plus a small runtime file saying where it runs.

The process that holds ``data_dir/owner.lock`` is the only one that opens the catalog and
the embedded vector store. Others read ``data_dir/owner.json`` to reach it (its Ray address
and actor name, its HTTP address). The lock dies with its process, so a crash never leaves
a data dir locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from msearch.errors import DataDirBusy


class OwnerLock:
    def __init__(self, settings):
        self.settings = settings
        self._fd: int | None = None

    def acquire(self, **runtime) -> "OwnerLock":
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.settings.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            info = read_runtime(self.settings) or {}
            where = f" (pid {info['pid']} on {info.get('host')})" if info.get("pid") else ""
            raise DataDirBusy(
                f"{data_dir} is already owned by another msearch process{where}; "
                "only one process may open its stores. Use that one, or stop it first."
            ) from None
        self._fd = fd
        write_runtime(self.settings, replace=True, pid=os.getpid(), host=socket.gethostname(),
                      started=time.time(), **runtime)
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                self.settings.runtime_path.unlink(missing_ok=True)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def write_runtime(settings, replace: bool = False, **fields) -> None:
    path: Path = settings.runtime_path
    data = {} if replace else (read_runtime(settings) or {})
    data.update({k: v for k, v in fields.items() if v is not None})
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def forget_runtime(settings, *keys: str) -> None:
    """Drop fields (e.g. ``http`` when a server stops) from the runtime file, if it is there."""
    data = read_runtime(settings)
    if data is None:
        return
    for key in keys:
        data.pop(key, None)
    write_runtime(settings, replace=True, **data)


def read_runtime(settings) -> dict | None:
    try:
        return json.loads(settings.runtime_path.read_text())
    except (OSError, ValueError):
        return None


def running_owner(settings) -> dict | None:
    """The runtime info of the live owner of this data dir, or None when nobody owns it."""
    return running_owner_at(settings.data_dir)


def running_owner_at(data_dir: Path) -> dict | None:
    """:func:`running_owner` for a data dir given by its path (no settings built)."""
    lock_path = Path(data_dir) / "owner.lock"
    if not lock_path.exists():
        return None
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return json.loads((Path(data_dir) / "owner.json").read_text())
        except (OSError, ValueError):
            return {}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def data_dir_from_environment(environ=None) -> Path:
    """The data dir ``MSEARCH_DATA_DIR`` names (as :class:`~msearch.settings.Settings` reads it:
    the name in any case, ``~`` expanded, made absolute), read without building the settings —
    for a command that only asks a running server."""
    environ = os.environ if environ is None else environ
    value = next((v for k, v in environ.items() if k.upper() == "MSEARCH_DATA_DIR"), "~/.msearch")
    return Path(value).expanduser().resolve()
