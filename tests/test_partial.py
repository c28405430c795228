"""Partly readable files are indexed from what can be read, and say what was lost (``warning``):
a video or a recording cut short, decoding errors, a PDF with a page that cannot be read."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from conftest import ffmpeg, index_direct, make_pdf, make_settings
from msearch.embed.fake import FakeEmbedder
from msearch.library import Library


def lavfi(path: Path, args: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *args, str(path)], check=True,
                   capture_output=True, timeout=300)
    return path


def cut(path: Path, keep: float, name: str) -> Path:
    data = path.read_bytes()
    out = path.with_name(name)
    out.write_bytes(data[: int(len(data) * keep)])
    path.unlink()
    return out


VIDEO = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=12", "-f", "lavfi", "-i",
         "sine=frequency=440:duration=12"]
SOUND = ["-f", "lavfi", "-i", "sine=frequency=440:duration=12"]


def test_files_cut_short_are_indexed_from_what_can_be_read_and_say_what_was_lost(tmp_path):
    root = tmp_path / "media"
    cut(lavfi(root / "full.avi", [*VIDEO, "-c:v", "cinepak", "-c:a", "pcm_s16le"]), 0.35, "camera.avi")
    cut(lavfi(root / "full.mp4", [*VIDEO, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                                  "-movflags", "+faststart"]), 0.4, "phone.mp4")
    cut(lavfi(root / "end.mp4", [*VIDEO, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]), 0.4,
        "no-index.mp4")  # its index (moov) was at the end: nothing can be read
    cut(lavfi(root / "full.mp3", [*SOUND, "-b:a", "128k"]), 0.4, "song.mp3")
    cut(lavfi(root / "full.flac", SOUND), 0.4, "take.flac")
    lavfi(root / "whole.flac", ["-f", "lavfi", "-i", "sine=frequency=300:duration=8"])
    pdf = make_pdf(root / "report.pdf", ["page one about otters", "page two about rivers", "page three about boats"])
    data = bytearray(pdf.read_bytes())
    second = [m.start() for m in re.finditer(rb"/Type /Page\b", bytes(data)) if data[m.start():m.start() + 12] != b"/Type /Pages"][1]
    data[second:second + 11] = b"/Type /Xxxx"  # page 2's object is no longer a page
    pdf.write_bytes(bytes(data))

    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake", "clap": "fake"})
    embedders = {role: FakeEmbedder(role) for role in ("clip", "text", "clap")}
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], embedders)
        failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
        assert set(failed) == {"no-index.mp4"} and "moov atom not found" in failed["no-index.mp4"]
        indexed = {Path(f["path"]).name for f in report["indexed"]}
        assert indexed == {"camera.avi", "phone.mp4", "song.mp3", "take.flac", "whole.flac", "report.pdf"}

        def warning(name: str) -> str | None:
            return lib.show(str(root / name))["warning"]

        assert re.search(r"frames stop at (\d+\.\d) s of 12\.0 s", warning("camera.avi")), warning("camera.avi")
        assert re.search(r"frames stop at \d+\.\d s of 12\.0 s", warning("phone.mp4")), warning("phone.mp4")
        assert re.search(r"sound stops at \d+\.\d s of 12\.0 s", warning("song.mp3")), warning("song.mp3")
        assert re.search(r"sound stops at \d+\.\d s of 12\.0 s", warning("take.flac")), warning("take.flac")
        assert warning("whole.flac") is None
        assert warning("report.pdf").startswith("page 2 cannot be read")
        # The scenes, windows and pages indexed are those that could be read.
        camera = lib.show(str(root / "camera.avi"))
        stop = float(re.search(r"frames stop at (\d+\.\d)", camera["warning"])[1])
        assert max(u["end_s"] for u in camera["units"] if u["space"] == "clip") <= stop + 0.1
        assert sorted({u["page"] for u in lib.show(str(root / "report.pdf"))["units"]}) == [1, 3]
        status = lib.status()
        assert {Path(w["path"]).name for w in status["warnings"]} == {"camera.avi", "phone.mp4", "song.mp3",
                                                                     "take.flac", "report.pdf"}
        # Indexing again changes nothing: the warning stays with the unchanged file.
        again = index_direct(lib, settings, [root], embedders)
        assert {Path(f["path"]).name for f in again["unchanged"]} == indexed
        assert warning("camera.avi") == camera["warning"]
    finally:
        lib.close()
