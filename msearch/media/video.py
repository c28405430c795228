"""Videos: probe, then one FFmpeg pass that detects scenes and picks their keyframes.

FFmpeg decodes once, scaled down to the size the model needs, and prints each frame's scene
score (``select='gte(scene,0)',metadata=print``) next to its timestamp; the raw frames come
through a pipe. Scenes close at a cut (score above the threshold) or at the maximum length, so
memory holds only the current scene's sampled candidates plus one keyframe per scene.
"""

from __future__ import annotations

import functools
import io
import logging
import queue
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from msearch.errors import BadInput, MissingDependency

log = logging.getLogger(__name__)

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\d+:\d+.*?: Video: (\w+).*?, (\d{2,5})x(\d{2,5})")
_FPS = re.compile(r"(\d+(?:\.\d+)?) fps")
_AUDIO = re.compile(r"Stream #\d+:\d+.*?: Audio: (\w+)")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
_FRAME = re.compile(r"pts_time:(-?\d+(?:\.\d+)?(?:e-?\d+)?)")
_SCORE = re.compile(r"lavfi\.scene_score=(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class VideoInfo:
    duration: float
    fps: float | None
    width: int  # as displayed (rotation applied)
    height: int
    vcodec: str
    acodec: str | None
    declared: float | None = None  # a longer length the file's own header declares (an AVI cut short)

    def as_dict(self) -> dict:
        return {"duration_s": self.duration, "fps": self.fps, "width": self.width, "height": self.height,
                "video_codec": self.vcodec, "audio_codec": self.acodec}


@dataclass
class Scene:
    start_s: float
    end_s: float
    keyframe_s: float | None
    keyframe: bytes | None  # raw RGB; None for a scene too short to hold a sampled frame
    width: int
    height: int
    sharpness: float = 0.0

    @property
    def length(self) -> float:
        return self.end_s - self.start_s


@dataclass
class _Candidate:
    t: float
    sharpness: float
    rgb: bytes


@dataclass
class _Open:
    start: float
    candidates: list[_Candidate] = field(default_factory=list)
    next_sample: float = 0.0


def ffmpeg_binary(configured: str | None = None) -> str:
    """The FFmpeg to use: the setting, else the system's, else the one imageio-ffmpeg ships."""
    if configured:
        path = shutil.which(configured) or (configured if Path(configured).is_file() else None)
        if not path:
            raise MissingDependency(f"MSEARCH_VIDEO__FFMPEG={configured!r} is not an executable")
        return path
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise MissingDependency("no ffmpeg found: install FFmpeg, or pip install imageio-ffmpeg") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


_PREFIX = re.compile(r"^\[[^\]]+ @ 0x[0-9a-f]+\] ")


def use_hwaccel(mode: str, ffmpeg: str) -> bool:
    """GPU decode when asked, or when 'auto' finds an NVIDIA GPU and an FFmpeg built for it."""
    if mode == "none":
        return False
    if mode == "auto" and shutil.which("nvidia-smi") is None:
        return False
    return "cuda" in _hwaccels(ffmpeg)


@functools.lru_cache(maxsize=4)
def _hwaccels(ffmpeg: str) -> tuple[str, ...]:
    out = subprocess.run([ffmpeg, "-hide_banner", "-hwaccels"], capture_output=True, text=True, timeout=30)
    return tuple(line.strip() for line in out.stdout.splitlines()[1:] if line.strip())


def _reason(stderr: str) -> str:
    """FFmpeg's own words for a failure: its last distinct messages, without their prefixes."""
    messages: list[str] = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line or line.startswith(("Input #", "frame=", "Stream #", "Duration:", "Metadata:")) \
                or "Parsed_metadata" in line or line.startswith(("Press [q]", "Output #")):
            continue
        message = _PREFIX.sub("", line)
        if message not in messages:
            messages.append(message)
    return "; ".join(messages[-4:])[:400] or "ffmpeg failed"


def read_header(path: Path, ffmpeg: str) -> str:
    """What FFmpeg prints when it opens ``path``: its containers, streams and errors."""
    return subprocess.run([ffmpeg, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True,
                          text=True, errors="replace", timeout=120).stderr


def header_seconds(text: str) -> float:
    """The container's duration from a header read; 0.0 when it does not say."""
    d = _DURATION.search(text)
    return int(d[1]) * 3600 + int(d[2]) * 60 + float(d[3]) if d else 0.0


def probe(path: Path, ffmpeg: str) -> VideoInfo:
    """Container and stream facts from FFmpeg's header read (no ffprobe needed)."""
    text = read_header(path, ffmpeg)
    video = _VIDEO.search(text)
    if video is None:
        if "Stream #" in text:
            raise BadInput("no video stream")
        raise BadInput(f"ffmpeg cannot read it: {_reason(text)}")
    seconds = header_seconds(text)
    line = text[video.start():text.find("\n", video.start())]
    fps = _FPS.search(line)
    width, height = int(video[2]), int(video[3])
    rotation = _ROTATION.search(text)
    if rotation and round(abs(float(rotation[1]))) % 180 == 90:
        width, height = height, width
    audio = _AUDIO.search(text)
    declared = avi_declared_seconds(path) if "Input #0, avi" in text else None
    return VideoInfo(seconds, float(fps[1]) if fps else None, width, height, video[1], audio[1] if audio else None,
                     declared if declared and declared > seconds else None)


def avi_declared_seconds(path: Path) -> float | None:
    """The length an AVI's main header declares (total frames × frame time): FFmpeg reports the
    length of what it can index, which for a file cut short (no index at its end) is only that."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return None
    at = head.find(b"avih")
    if at < 0 or len(head) < at + 28:
        return None
    usec_per_frame, _, _, _, total_frames = struct.unpack_from("<5I", head, at + 8)
    return total_frames * usec_per_frame / 1e6 if usec_per_frame and total_frames else None


def frame_size(info: VideoInfo, short_side: int) -> tuple[int, int]:
    """Decode size: the short side at most ``short_side``, both even."""
    scale = min(1.0, short_side / min(info.width, info.height))
    return max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of a Laplacian on the grey image: blurred and transition frames score low."""
    grey = rgb[::2, ::2].astype(np.float32).mean(axis=2)
    lap = -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    return float(lap.var())


def scan(path: Path, info: VideoInfo, vs, ffmpeg: str, hwaccel: bool = False,
         warnings: list[str] | None = None) -> list[Scene]:
    """Scenes with keyframes, in one decode; ``vs`` is the video settings section. What could
    not be read (frames that stop early, decoding errors) is added to ``warnings``: the scenes
    are those of what could be read."""
    try:
        return _scan(path, info, vs, ffmpeg, hwaccel, warnings)
    except BadInput:
        if not hwaccel:
            raise
        log.info("GPU decode of %s failed; decoding on the CPU", path)
        return _scan(path, info, vs, ffmpeg, False, warnings)


_DECODE_ERROR = re.compile(r"error|failed|corrupt|invalid data|missing|truncat", re.IGNORECASE)


def decode_errors(lines: list[str]) -> str | None:
    """FFmpeg's complaints while decoding (errors, corrupt or missing data), in its own words."""
    bad = [line for line in lines if _DECODE_ERROR.search(line) and "Parsed_metadata" not in line]
    return _reason("\n".join(bad)) if bad else None


def shortfall(decoded_s: float, declared_s: float | None) -> bool:
    """Whether a decode stopped well before the length the file declares."""
    return bool(declared_s) and decoded_s < declared_s * 0.98 - 0.5


def _command(path: Path, width: int, height: int, vs, ffmpeg: str, hwaccel: bool) -> list[str]:
    """One decode, two branches: scene scores of every frame on a tiny copy (printed with their
    timestamps), and model-sized RGB frames every ``sample_s`` seconds through the pipe."""
    import ffmpeg as ff

    video = ff.input(str(path), **({"hwaccel": "cuda"} if hwaccel else {})).video.split()
    scores = (video[0].filter("scale", 128, -2, flags="fast_bilinear")
              .filter("select", "gte(scene,0)").filter("metadata", "print"))
    samples = (video[1].filter("select", f"isnan(prev_selected_t)+gte(t-prev_selected_t,{vs.sample_s})")
               .filter("scale", width, height, flags="area")
               # print shows only frames that carry metadata: give each sampled frame some.
               .filter("metadata", "add", key="msearch.sample", value="1").filter("metadata", "print"))
    stream = ff.merge_outputs(
        scores.output("-", format="null"),
        samples.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough"),
    )
    args = stream.compile(cmd=ffmpeg)
    # Global options go first (ffmpeg-python appends them, where FFmpeg ignores them).
    return [args[0], "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *args[1:]]


_END = (float("inf"), 0.0)  # after the last frame's score


def _scan(path: Path, info: VideoInfo, vs, ffmpeg: str, hwaccel: bool, warnings: list[str] | None = None
          ) -> list[Scene]:
    width, height = frame_size(info, vs.decode_side)
    frame_bytes = width * height * 3
    proc = subprocess.Popen(_command(path, width, height, vs, ffmpeg, hwaccel), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=frame_bytes)
    scores: queue.Queue = queue.Queue()
    samples: queue.Queue = queue.Queue()
    log_tail: list[str] = []
    reader = threading.Thread(target=_read_meta, args=(proc.stderr, scores, samples, log_tail), daemon=True)
    reader.start()
    scenes: list[Scene] = []
    current = _Open(start=0.0)
    last_t = None

    lookahead: list[tuple[float, float]] = []

    def advance(until: float) -> None:
        """Apply every frame's scene score up to ``until``: close scenes at cuts and max length."""
        nonlocal current, last_t
        while True:
            t, score = lookahead.pop() if lookahead else scores.get(timeout=STALL_S)
            if t > until:
                lookahead.append((t, score))
                return
            if last_t is not None and (score > vs.scene_threshold or t - current.start >= vs.max_scene_s):
                scenes.append(_close(current, t, width, height))
                current = _Open(start=t)
            last_t = t

    try:
        while True:
            data = proc.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            t = samples.get(timeout=STALL_S)
            advance(t)
            rgb = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            current.candidates.append(_Candidate(t, sharpness(rgb), data))
        advance(1e18)
    except queue.Empty:
        proc.kill()
        raise BadInput(f"ffmpeg stalled: {_reason(chr(10).join(log_tail))}") from None
    finally:
        proc.stdout.close()
        code = proc.wait()
        reader.join(timeout=10)
    stderr = "\n".join(log_tail)
    if code != 0:
        raise BadInput(f"ffmpeg failed: {_reason(stderr)}")
    if last_t is None or not (current.candidates or scenes):
        raise BadInput(f"no video frames could be decoded: {_reason(stderr)}")
    frame = 1.0 / info.fps if info.fps else 0.04
    declared = info.declared or info.duration
    end = last_t + frame
    notes = []
    if shortfall(end, declared):
        notes.append(f"frames stop at {end:.1f} s of {declared:.1f} s")
    else:
        end = max(info.duration, end)
    if (errors := decode_errors(log_tail)) is not None:
        notes.append(f"decoding errors: {errors}")
    if notes:
        if warnings is None:
            raise BadInput("; ".join(notes))
        warnings.extend(notes)
    scenes.append(_close(current, end, width, height))
    return post_process(scenes, vs.min_scene_s, vs.max_scenes)


STALL_S = 120.0
_METADATA = re.compile(r"\[Parsed_metadata_(\d+) @")


def _read_meta(stream, scores: queue.Queue, samples: queue.Queue, tail: list[str]) -> None:
    """Route FFmpeg's metadata lines: the branch that prints scene scores feeds ``scores``
    with (t, score) per frame, the other feeds ``samples`` with the piped frames' times."""
    pending: dict[str, float] = {}
    score_branch = None
    for raw in stream:
        line = raw.decode("utf-8", "replace")
        branch = _METADATA.search(line)
        if branch is None:
            tail.append(line.rstrip())
            del tail[:-50]
            continue
        name = branch[1]
        if (m := _FRAME.search(line)) is not None:
            if name != score_branch and name in pending:  # its last frame had no score: a sample
                samples.put(pending.pop(name))
            pending[name] = float(m[1])
            if score_branch is not None and name != score_branch:
                samples.put(pending.pop(name))
        elif (m := _SCORE.search(line)) is not None and name in pending:
            if score_branch is None:
                score_branch = name
                for other in [k for k in pending if k != name]:
                    samples.put(pending.pop(other))
            scores.put((pending.pop(name), float(m[1])))
    for name, t in pending.items():
        if name != score_branch:
            samples.put(t)
    scores.put(_END)


def _close(scene: _Open, end: float, width: int, height: int) -> Scene:
    """Finish a scene: its keyframe is the sharpest sampled frame in its middle part."""
    length = end - scene.start
    lo, hi = scene.start + 0.2 * length, end - 0.2 * length
    middle = [c for c in scene.candidates if lo <= c.t <= hi]
    mid = scene.start + length / 2
    pool = middle or sorted(scene.candidates, key=lambda c: abs(c.t - mid))[:1]
    if not pool:  # shorter than the sampling interval: post_process merges it into a neighbour
        return Scene(scene.start, end, None, None, width, height)
    best = max(pool, key=lambda c: (round(c.sharpness, 1), -abs(c.t - mid)))
    return Scene(scene.start, end, best.t, best.rgb, width, height, best.sharpness)


def post_process(scenes: list[Scene], min_len: float, max_scenes: int) -> list[Scene]:
    """Merge scenes shorter than ``min_len`` into a neighbour, then cap the count by merging the
    shortest adjacent pairs (which keeps coverage of the timeline even). Scenes keep tiling."""
    scenes = list(scenes)
    i = 0
    while len(scenes) > 1 and i < len(scenes):
        if scenes[i].length < min_len or scenes[i].keyframe is None:
            j = i - 1 if i > 0 else i + 1
            a, b = sorted((i, j))
            scenes[a:b + 1] = [_merge(scenes[a], scenes[b])]
            i = max(a - 1, 0)
        else:
            i += 1
    if len(scenes) > max(1, max_scenes):
        scenes = _cap(scenes, max(1, max_scenes))
    return scenes


def _cap(scenes: list[Scene], k: int) -> list[Scene]:
    """Keep the k-1 existing boundaries nearest to an even split of the timeline."""
    start, end = scenes[0].start_s, scenes[-1].end_s
    bounds = [s.start_s for s in scenes[1:]]
    chosen: list[int] = []
    for i in range(1, k):
        ideal = start + (end - start) * i / k
        lo = chosen[-1] + 1 if chosen else 0
        hi = len(bounds) - (k - 1 - i)  # leave room for the boundaries still to choose
        chosen.append(min(range(lo, hi), key=lambda n: abs(bounds[n] - ideal)))
    groups, first = [], 0
    for n in chosen + [len(scenes) - 1]:
        groups.append(scenes[first:n + 1])
        first = n + 1
    return [_merge(*g) for g in groups]


def _merge(*parts: Scene) -> Scene:
    """One scene spanning ``parts``; its keyframe is that of the longest part that has one."""
    keep = max(parts, key=lambda s: (s.keyframe is not None, s.length))
    return Scene(parts[0].start_s, parts[-1].end_s, keep.keyframe_s, keep.keyframe, keep.width, keep.height,
                 keep.sharpness)


def keyframe_image(scene: Scene):
    from msearch.media.image import rgb_image

    return rgb_image(scene.keyframe, scene.width, scene.height)


def thumbnail(scene: Scene, side: int) -> bytes:
    img = keyframe_image(scene)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()
