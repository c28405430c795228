"""Videos end to end with a tiny random CLIP: scenes stored as moments, found by their frames."""

import io

import numpy as np
import pytest

from conftest import ffmpeg, index_direct, make_settings, make_video
from msearch.embed import build_embedder
from msearch.embed.resolve import image_embed_side
from msearch.library import Library, merge_moments
from msearch.media.image import rgb_image, shrink_rgb
from msearch.media.video import keyframe_image, probe, scan
from msearch.search import SearchService
from msearch.store.vectors import Hit

SEGMENTS = [("testsrc2", 3.0), ("smptebars", 3.0), ("color=c=red", 3.0)]


@pytest.fixture(scope="module")
def indexed_video(tmp_path_factory, tiny_clip):
    tmp = tmp_path_factory.mktemp("videosearch")
    folder = tmp / "clips"
    video = make_video(folder / "shots.mp4", SEGMENTS, audio=True)
    (folder / "broken.mov").write_bytes(video.read_bytes()[:2000])
    settings = make_settings(tmp / "data", models={"clip": tiny_clip, "text": "fake"})
    clip = build_embedder("clip", settings)
    lib = Library(settings)
    report = index_direct(lib, settings, [folder], {"clip": clip})
    yield settings, lib, clip, video, report
    lib.close()
    clip.close()


def test_video_is_indexed_as_scenes_with_media_facts(indexed_video):
    _, lib, _, video, report = indexed_video
    assert [r["path"] for r in report["indexed"]] == [str(video)]
    shown = lib.show(str(video))
    assert shown["kind"] == "video" and shown["status"] == "indexed"
    bounds = [b for u in shown["units"] for b in (u["start_s"], u["end_s"])]
    assert bounds == pytest.approx([0, 3, 3, 6, 6, 9], abs=0.05)
    assert all(u["thumbnail"] for u in shown["units"])
    media = shown["media"]
    assert media["duration_s"] == pytest.approx(9.0, abs=0.1) and media["fps"] == 25
    assert (media["width"], media["height"]) == (320, 240)
    assert media["video_codec"] == "h264" and media["audio_codec"] == "aac"


def test_broken_video_is_failed_with_ffmpegs_reason(indexed_video):
    _, _, _, video, report = indexed_video
    (failed,) = report["failed"]
    assert failed["path"].endswith("broken.mov")
    assert "moov atom not found" in failed["error"] or "Invalid data" in failed["error"]


def test_keyframe_vectors_are_the_models_output(indexed_video):
    settings, lib, clip, video, _ = indexed_video
    scenes = scan(video, probe(video, ffmpeg()), settings.video, ffmpeg())
    side = image_embed_side(settings)  # the keyframe as the model gets it: scaled as a picture is
    assert min(scenes[0].width, scenes[0].height) > side
    expected = clip.embed_images([rgb_image(*shrink_rgb(s.keyframe, s.width, s.height, side)) for s in scenes])
    stored = sorted(lib.vectors.scroll("clip"), key=lambda h: h.payload["unit"])
    vectors = lib.vectors.vectors("clip", [h.id for h in stored])
    for hit, want in zip(stored, expected):
        assert float(np.dot(vectors[hit.id], want)) >= 0.9999


@pytest.mark.parametrize("scene", [0, 1, 2])
def test_a_keyframe_finds_its_moment_first(indexed_video, scene):
    settings, lib, clip, video, _ = indexed_video
    scenes = scan(video, probe(video, ffmpeg()), settings.video, ffmpeg())
    buf = io.BytesIO()
    keyframe_image(scenes[scene]).save(buf, format="PNG")
    results = SearchService({"clip": clip}, lib, settings).search_image(buf.getvalue(), kinds=["video"])
    first = results[0]
    assert first["path"] == str(video) and first["kind"] == "video"
    assert (first["start_s"], first["end_s"]) == pytest.approx((scenes[scene].start_s, scenes[scene].end_s), abs=0.05)
    assert first["thumbnail"].startswith("/api/v1/thumbnails/")


def test_adjacent_scenes_merge_into_one_moment():
    def hit(unit, score, raw, h="v"):
        return Hit(f"{h}{unit}", score, {"content_hash": h, "kind": "video", "unit": unit,
                                         "start_s": unit * 10.0, "end_s": unit * 10.0 + 10}, raw)

    merged = merge_moments([hit(1, 0.5, 0.31), hit(2, 0.9, 0.32), hit(3, 0.4, 0.20), hit(5, 0.7, 0.3),
                            hit(0, 0.1, 0.1, "w"),
                            Hit("img", 0.8, {"content_hash": "i", "kind": "image", "unit": 0}, 0.3)])
    spans = [(h.payload.get("start_s"), h.payload.get("end_s"), h.score) for h in merged]
    # Scenes 1 and 2 match alike and merge; 3 is adjacent but matches much less; 5 is apart.
    assert spans == [(10.0, 30.0, 0.9), (None, None, 0.8), (50.0, 60.0, 0.7), (30.0, 40.0, 0.4),
                     (0.0, 10.0, 0.1)]
