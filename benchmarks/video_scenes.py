"""Scene + keyframe extraction speed on a few-minute 1080p video that FFmpeg generates:
as a multiple of realtime, and as a ratio to FFmpeg decoding the same file to null.

    .venv/bin/python benchmarks/video_scenes.py [--minutes 3] [--repeat 3] [--out results.json]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from msearch.media.video import ffmpeg_binary, probe, scan
from msearch.settings import VideoSettings

SOURCES = ["testsrc2", "smptehdbars", "color=c=gray", "gradients=seed=1", "testsrc", "rgbtestsrc"]


def make(path: Path, minutes: float, ffmpeg: str) -> None:
    """1080p25 H.264: segments of 20 s from alternating lavfi sources (a cut every 20 s)."""
    n = max(1, int(minutes * 60 // 20))
    inputs, labels = [], []
    for i in range(n):
        name = SOURCES[i % len(SOURCES)]
        sep = ":" if "=" in name else "="
        inputs += ["-f", "lavfi", "-i", f"{name}{sep}size=1920x1080:rate=25:duration=20"]
        labels.append(f"[{i}:v]setsar=1[v{i}]")
    graph = ";".join(labels) + ";" + "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1[out]"
    subprocess.run([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph,
                    "-map", "[out]", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
                   check=True)


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ffmpeg = ffmpeg_binary()
    path = Path(tempfile.mkdtemp(prefix="msearch-bench-")) / "hd.mp4"
    make(path, args.minutes, ffmpeg)
    info = probe(path, ffmpeg)
    decode = best_of(args.repeat, lambda: subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        check=True))
    scenes = []
    extract = best_of(args.repeat, lambda: scenes.__setitem__(slice(None), scan(path, info, VideoSettings(), ffmpeg)))
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {os.cpu_count()} cpus",
        "ffmpeg": subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0][:60],
        "video": f"{info.width}x{info.height} {info.fps} fps {info.vcodec}, {info.duration:.0f} s",
        "scenes": len(scenes),
        "decode_only_s": round(decode, 2), "scenes_keyframes_s": round(extract, 2),
        "realtime_multiple": round(info.duration / extract, 1),
        "ratio_to_decode_only": round(decode / extract, 2),
    }
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
