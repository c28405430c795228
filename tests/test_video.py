"""Scenes and keyframes from generated videos with known cut times."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ffmpeg, make_video
from msearch.errors import BadInput
from msearch.media.video import Scene, post_process, probe, scan, sharpness
from msearch.settings import VideoSettings

FPS = 25
# (source, seconds): moving pattern, bars, a long static colour, a new pattern, a slow fade out.
SEGMENTS = [
    ("testsrc2", 3.0),
    ("smptebars", 2.0),
    ("color=c=0x2050a0", 24.0),
    # Warm colours: with the default (random) palette the cut from the blue scored near the
    # threshold, and x264's output varies a little from run to run.
    ("gradients=c0=0xffd000:c1=0xff3000:nb_colors=2:seed=1", 3.0),
    ("testsrc|fade=t=out:st=0.5:d=3", 4.0),
]
CUTS = [3.0, 5.0, 29.0, 32.0]
DURATION = 36.0


@pytest.fixture(scope="module")
def cuts_video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("video") / "cuts.mp4", SEGMENTS, fps=FPS)


@pytest.fixture(scope="module")
def scenes(cuts_video):
    return scan(cuts_video, probe(cuts_video, ffmpeg()), VideoSettings(), ffmpeg())


def test_probe_reads_the_container(cuts_video):
    info = probe(cuts_video, ffmpeg())
    assert info.duration == pytest.approx(DURATION, abs=0.05)
    assert info.fps == FPS and (info.width, info.height) == (320, 240)
    assert info.vcodec == "h264" and info.acodec is None


def test_scenes_tile_the_video(scenes):
    assert scenes[0].start_s == 0.0
    assert scenes[-1].end_s == pytest.approx(DURATION, abs=1 / FPS)
    for a, b in zip(scenes, scenes[1:]):
        assert a.end_s == b.start_s


def test_every_cut_is_found_within_one_frame(scenes):
    starts = [s.start_s for s in scenes]
    for cut in CUTS:
        assert min(abs(cut - s) for s in starts) <= 1 / FPS + 1e-6, (cut, starts)


def test_no_cut_inside_the_static_part_or_the_fade_but_long_shots_split(scenes):
    boundaries = [s.start_s for s in scenes[1:]]
    static = [b for b in boundaries if CUTS[1] + 0.1 < b < CUTS[2] - 0.1]
    # 24 s of one colour: no scene cut, but splits by the 10 s maximum (every 10 s).
    assert static == pytest.approx([15.0, 25.0], abs=1 / FPS)
    assert not [b for b in boundaries if CUTS[3] + 0.1 < b]  # the fade
    assert not [b for b in boundaries if 0.1 < b < CUTS[0] - 0.1]  # the moving pattern
    assert all(s.length <= 10.0 + 1.0 + 1e-6 for s in scenes)


def test_keyframes_lie_inside_their_scenes_away_from_the_cuts(scenes):
    for s in scenes:
        assert s.start_s <= s.keyframe_s < s.end_s
        if s.length >= 2:
            assert s.start_s + 0.2 * s.length - 1e-6 <= s.keyframe_s <= s.end_s - 0.2 * s.length + 1e-6
        assert len(s.keyframe) == s.width * s.height * 3


def test_keyframe_is_the_sharp_frame_not_the_faded_one(scenes):
    fade = scenes[-1]
    assert fade.start_s == pytest.approx(32.0, abs=1 / FPS)
    # The fade darkens towards the end: the pick is from its first (sharper) part.
    assert fade.keyframe_s < 34.0


def test_keyframes_are_model_sized(scenes):
    assert {(s.width, s.height) for s in scenes} == {(320, 240)}  # already small: not upscaled


def test_post_process_merges_short_scenes_and_caps_evenly():
    def sc(a, b):
        return Scene(a, b, (a + b) / 2, b"", 2, 2)

    merged = post_process([sc(0, 5), sc(5, 5.3), sc(5.3, 9), sc(9, 9.2)], min_len=1.0, max_scenes=10)
    assert [(s.start_s, s.end_s) for s in merged] == [(0, 5.3), (5.3, 9.2)]
    many = [sc(i, i + 1) for i in range(100)]
    capped = post_process(many, min_len=0.5, max_scenes=10)
    assert len(capped) == 10
    assert [s.length for s in capped] == [10] * 10  # even coverage, not the longest few
    assert capped[0].start_s == 0 and capped[-1].end_s == 100


def test_sharpness_prefers_detail():
    rng = np.random.default_rng(0)
    sharp = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert sharpness(sharp) > sharpness(flat) == 0.0


def test_threshold_is_configurable_within_bounds():
    assert VideoSettings(scene_threshold=0.1).scene_threshold == 0.1
    with pytest.raises(ValueError):
        VideoSettings(scene_threshold=0.9)


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory, cuts_video):
    root = tmp_path_factory.mktemp("bad")
    data = cuts_video.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "random.mkv").write_bytes(os.urandom(20000))
    (root / "zero.mp4").write_bytes(b"")
    subprocess.run([ffmpeg(), "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=2", "-y",
                    str(root / "audio_only.mp4")], check=True)
    mkv = make_video(root / "long.mkv", [("testsrc2", 6.0)], codec=["-c:v", "libx264", "-preset", "ultrafast"])
    (root / "cut_mkv.mkv").write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])
    return root


@pytest.mark.parametrize("name,reason", [
    ("truncated.mp4", "moov atom not found"),
    ("random.mkv", "ffmpeg cannot read it"),
    ("zero.mp4", "ffmpeg cannot read it"),
    ("audio_only.mp4", "no video stream"),
    ("cut_mkv.mkv", "frames stop at"),  # asked without a list for warnings: a cut file fails
])
def test_bad_videos_fail_with_ffmpegs_reason(bad_videos, name, reason):
    path = bad_videos / name
    with pytest.raises(BadInput, match=reason):
        scan(path, probe(path, ffmpeg()), VideoSettings(), ffmpeg())


def test_a_video_cut_short_gives_the_scenes_that_can_be_read_and_a_warning(bad_videos):
    path = bad_videos / "cut_mkv.mkv"
    warnings: list[str] = []
    scenes = scan(path, probe(path, ffmpeg()), VideoSettings(), ffmpeg(), warnings=warnings)
    assert scenes and warnings[0].startswith("frames stop at") and warnings[0].endswith("of 6.0 s")
    assert scenes[-1].end_s <= float(warnings[0].split()[3]) + 0.05


MEMORY_SCRIPT = r"""
import re, sys
from pathlib import Path
from msearch.media.video import ffmpeg_binary, probe, scan
from msearch.settings import VideoSettings
path = Path(sys.argv[1])
scenes = scan(path, probe(path, ffmpeg_binary()), VideoSettings(), ffmpeg_binary())
# VmHWM: this process's peak resident memory (ru_maxrss would include the forking parent's).
peak_kb = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read())[1])
print(len(scenes), peak_kb // 1024)
"""
PEAK_RSS_MB = 250  # measured about 65 MB: the process, one scene's candidates, the keyframes


def test_memory_stays_bounded_on_a_long_1080p_video(tmp_path):
    video = make_video(tmp_path / "hd.mp4", [("testsrc2", 60.0), ("color=c=gray", 60.0), ("smptehdbars", 60.0)],
                       size="1920x1080", codec=["-c:v", "libx264", "-preset", "ultrafast", "-crf", "40",
                                                "-pix_fmt", "yuv420p"])
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(video)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    n_scenes, peak_mb = map(int, out.stdout.split())
    assert n_scenes >= 18  # three minutes cut every 10 s at least
    assert peak_mb < PEAK_RSS_MB, f"scene stage peaked at {peak_mb} MB"


def test_rapid_cuts_shorter_than_the_sampling_interval(tmp_path):
    # The last flash is black: a bright gradient after white scored near the threshold (the cut
    # into the long shot must be unambiguous; x264's output varies a little from run to run).
    flashes = [(src, 0.2) for src in ["testsrc2", "smptebars", "color=c=red", "color=c=black"] * 4]
    video = make_video(tmp_path / "flashes.mp4", flashes + [("gradients=c0=0xffd000:c1=0xff3000:nb_colors=2:seed=1", 3.0)])
    scenes = scan(video, probe(video, ffmpeg()), VideoSettings(), ffmpeg())
    assert all(s.keyframe is not None and s.start_s <= s.keyframe_s < s.end_s for s in scenes)
    assert scenes[0].start_s == 0 and scenes[-1].end_s == pytest.approx(6.2, abs=0.05)
    assert all(s.length >= 1.0 for s in scenes)
    assert scenes[-1].start_s == pytest.approx(3.2, abs=1 / FPS)  # the cut into the long shot is kept
