"""Shared fixtures: offline model caches, tiny checkpoints, generated media, one local Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

_CACHE = Path(tempfile.mkdtemp(prefix="msearch-test-cache-"))
# No model hub here: everything loads from local folders or packages.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(_CACHE / "hf"))
os.environ.setdefault("INFINITY_HOME", str(_CACHE / "infinity"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Settings come from explicit arguments in tests, never from the developer's environment.
for _name in [n for n in os.environ if n.startswith("MSEARCH_")]:
    del os.environ[_name]

from msearch.settings import Settings, ray_environment  # noqa: E402

ray_environment()

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import build_tiny_clap, build_tiny_clip, build_tiny_colqwen2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    return build_tiny_clip(str(tmp_path_factory.mktemp("tiny-clip")))


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory) -> str:
    return build_tiny_clap(str(tmp_path_factory.mktemp("tiny-clap")))


@pytest.fixture(scope="session")
def tiny_colqwen2(tmp_path_factory) -> str:
    return build_tiny_colqwen2(str(tmp_path_factory.mktemp("tiny-colqwen2")))


def make_settings(data_dir: Path, **overrides) -> Settings:
    """Test settings; the sound, speech, page and OCR models are off unless a test names them."""
    base = {"data_dir": data_dir, "dashboard": False, "ray_num_cpus": 2}
    base.update(overrides)
    base["models"] = {"clap": "none", "whisper": "none", "colpali": "none", "ocr": "none", **base.get("models", {})}
    return Settings(**base)


@pytest.fixture
def fake_settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"})


def write_image(path: Path, seed: int, size=(96, 64), fmt=None) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_corpus(root: Path) -> Path:
    """A small folder of every kind of input the foundation handles, good and bad."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_image(root / "photos" / f"img{i}.jpg", seed=i)
    write_image(root / "photos" / "graphic.png", seed=9)
    write_image(root / "photos" / "misnamed.txt", seed=10, fmt="PNG")  # content wins over suffix
    docs = root / "docs"
    docs.mkdir()
    (docs / "budget.md").write_text(
        "# Quarterly budget review\n\nThe finance team reviewed the marketing budget and cut travel spending.\n"
    )
    (docs / "gardening.txt").write_text("Tomatoes need full sun, rich soil and regular watering in summer.\n")
    (docs / "rain.txt").write_bytes("红色汽车在雨中缓缓行驶，司机打开了雨刷。".encode("gbk"))
    (root / "empty.txt").write_bytes(b"")
    (root / "noise.bin").write_bytes(os.urandom(4096))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(64))
    (root / ".hidden.txt").write_text("hidden files are not indexed")
    return root


@pytest.fixture
def corpus(tmp_path) -> Path:
    return make_corpus(tmp_path / "corpus")


def ray_processes() -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if any(tag in line for tag in ("ray::", "raylet", "gcs_server", "ray/dashboard", "ray/autoscaler/",
                                           "ray/_private/log_monitor"))
            and "defunct" not in line]


def wait_no_ray_processes(timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = ray_processes()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)  # leave the CPU to the processes that are exiting


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for a test module; checks that nothing is left running afterwards."""
    import ray

    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=False,
             namespace="msearch", log_to_driver=False, configure_logging=True, logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    from pipelines.cluster import shutdown

    shutdown()
    left = wait_no_ray_processes()
    assert not left, f"Ray processes left behind: {left}"


def index_direct(library, settings, roots, embedders, missing=None, transcriber=None, reverse=False) -> dict:
    """An indexing run in this process: the pipeline's own orchestration, stages and sink, run one
    stage after another with ``library`` as the store owner (tests of the core without Ray).

    ``reverse`` writes the unit blocks last first (blocks may reach the writer in any order).
    Returns the owner's report (the files of each outcome) with the files the run ``removed``
    because they left the folders, and the run's ``summary``.
    """
    from pipelines.index import index_files
    from pipelines.runners import run_in_process
    from pipelines.sink import IndexSink

    models = {role: e.model_id for role, e in embedders.items()}
    if settings.models.ocr != "none":
        models["ocr"] = settings.models.ocr
    if transcriber is not None:
        models["whisper"] = transcriber.model_id
    # Small batches, so that a file's units reach the writer over several calls, as on Ray.
    settings = settings.model_copy(update={"index": settings.index.model_copy(
        update={"hash_batch_size": 4, "decode_block_units": 7, "write_batch_size": 7, "embed_batch_size": 7,
                "niceness": 0})})
    cpus = {"hash": 0, "decode": 0, "write": 0, "embed": 0, "whisper": 0}
    built = {"embed": {"embedders": embedders}}
    if transcriber is not None:  # decode hands recordings to it, in this process
        from pipelines.stages import Transcribe

        built["decode"] = {"transcribe": Transcribe(settings, transcriber)}

    def execute(rows, build, embedding, speech):
        # With a Qdrant server the sink stores the points itself (here: into the library's client).
        sink = IndexSink(settings, owner=library, vectors=library.vectors if settings.qdrant_url else None)
        return run_in_process(build(cpus), rows, sink, library, built, reverse)

    paths = [Path(r).expanduser().resolve() for r in roots]
    summary, report = index_files(library, settings, paths, models, missing or {}, execute)
    return {**report, "removed": summary["removed"], "summary": summary}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners() -> set[str]:
    """Local addresses of every listening TCP socket on the machine."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def non_loopback(addresses: set[str]) -> set[str]:
    loopback = ("127.", "[::ffff:127.", "[::1]")
    return {a for a in addresses if not a.startswith(loopback)}


@pytest.fixture(scope="module")
def minilm_id() -> str:
    return "sentence-transformers/all-MiniLM-L6-v2"


def ffmpeg() -> str:
    from msearch.media.video import ffmpeg_binary

    return ffmpeg_binary()


def make_video(path: Path, segments: list[tuple[str, float]], fps: int = 25, size: str = "320x240",
               codec: list[str] | None = None, audio: bool = False) -> Path:
    """Concatenate lavfi sources into one file: ``segments`` are (source[,filters], seconds);
    cuts fall exactly at the running sums of the durations."""
    inputs, labels = [], []
    for i, (source, seconds) in enumerate(segments):
        name, _, filters = source.partition("|")
        sep = ":" if "=" in name else "="
        inputs += ["-f", "lavfi", "-i", f"{name}{sep}size={size}:rate={fps}:duration={seconds}"]
        labels.append(f"[{i}:v]{filters + ',' if filters else ''}setsar=1[v{i}]")
    graph = ";".join(labels) + ";" + "".join(f"[v{i}]" for i in range(len(segments))) + \
        f"concat=n={len(segments)}:v=1[out]"
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *inputs]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={sum(s for _, s in segments)}"]
    cmd += ["-filter_complex", graph, "-map", "[out]"]
    if audio:
        cmd += ["-map", f"{len(segments)}:a", "-c:a", "aac"]
    cmd += [*(codec or ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]), str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    return path


def speak(path: Path, text: str, lead_s: float = 0.0, tail_s: float = 0.5, voice: str = "en-us") -> Path:
    """``text`` spoken by espeak-ng after ``lead_s`` seconds of silence, encoded by ``path``'s suffix.

    Returns the path; the speech's own length is ``speech_seconds(path) - lead_s - tail_s``.
    """
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng; .ci/run does)")
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.name + ".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    pad = f"adelay={int(lead_s * 1000)}:all=1,apad=pad_dur={tail_s}"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(raw), "-af", pad,
                    "-ar", "44100", str(path)], check=True, capture_output=True, timeout=120)
    raw.unlink()
    return path


def sound_file(path: Path) -> Path:
    """25 s of five different 5 s sounds, so that overlapping windows all differ."""
    parts = ["sine=frequency=220", "anoisesrc=color=pink:amplitude=0.4:seed=1", "sine=frequency=1800",
             "anoisesrc=color=brown:amplitude=0.5:seed=2", "sine=frequency=600"]
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y"]
    for p in parts:
        cmd += ["-f", "lavfi", "-i", f"{p}:duration=5"]
    graph = "".join(f"[{i}]aresample=48000,aformat=channel_layouts=mono[a{i}];" for i in range(len(parts)))
    graph += "".join(f"[a{i}]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=0:a=1"
    subprocess.run([*cmd, "-filter_complex", graph, str(path)], check=True, timeout=60)
    return path


CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"


def cjk_font(size: int):
    from PIL import ImageFont

    if not Path(CJK_FONT).exists():
        pytest.fail("the CJK font is not installed (apt-get install fonts-wqy-zenhei; .ci/run does)")
    return ImageFont.truetype(CJK_FONT, size)


def text_picture(lines: list[str], size=(800, 600), font_size: int = 40):
    """A white picture with ``lines`` of dark text (Chinese and English both draw)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (250, 250, 248))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((40, 60 + i * font_size * 2), line, fill=(20, 20, 30), font=cjk_font(font_size))
    return img


def make_pdf(path: Path, pages: list, password: str | None = None) -> Path:
    """A PDF (fpdf2): a str page is a text layer (lines split on newlines), a PIL image page is a
    scan without one; ``password`` encrypts it."""
    import logging

    from fpdf import FPDF

    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)
    pdf = FPDF(unit="pt", format="A4")
    pdf.set_auto_page_break(False)
    pdf.add_font("zenhei", fname=CJK_FONT)
    for page in pages:
        pdf.add_page()
        if isinstance(page, str):
            pdf.set_font("zenhei", size=14)
            for i, line in enumerate(page.split("\n")):
                pdf.text(72, 100 + 22 * i, line)
        else:
            pdf.image(page, x=0, y=0, w=pdf.w, h=pdf.h)
    if password:
        from fpdf.enums import EncryptionMethod

        pdf.set_encryption(owner_password="owner-" + password, user_password=password,
                           encryption_method=EncryptionMethod.AES_256)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def speech_span(path: Path) -> tuple[float, float]:
    """Where sound is in a file (start and end of samples above -50 dBFS), in seconds."""
    import numpy as np

    from msearch.media import audio

    samples = np.concatenate(list(audio.pcm_blocks(path, ffmpeg(), 16000, 60)))
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 32768 * 10 ** (-50 / 20))
    return loud[0] / 16000, loud[-1] / 16000


def wait_for_health(url: str, process: subprocess.Popen, timeout: float = 240) -> None:
    """Poll ``url``/health until it answers 200, failing early if ``process`` exits."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{url} did not come up in {timeout} s"
        time.sleep(0.5)
