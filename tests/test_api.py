"""The HTTP API without Ray: the FastAPI app over a Library and fake embedders, driven with httpx.

Filters, paging, order and the score cut-off; find-similar; the media routes (original file with
ranges, browser-playable clips, page images); the OpenAI-compatible embeddings; error codes.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import ffmpeg, index_direct, make_pdf, make_settings, make_video, write_image
from msearch.embed.fake import FakeEmbedder
from msearch.library import Library, file_id_for
from msearch.search import SearchService
from serve.api import Backend, create_app

TOKEN = "t0ken"


def at(day: str) -> float:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp()


class Queue:
    def __init__(self):
        self.submitted = []

    def submit(self, paths):
        self.submitted.append(paths)

    def state(self):
        return {}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "media"
    notes = "The finance team reviewed the quarterly budget and cut travel spending."
    (root / "2023" / "notes").mkdir(parents=True)
    (root / "2024" / "notes").mkdir(parents=True)
    (root / "2023" / "notes" / "budget.md").write_text(notes)
    (root / "2024" / "notes" / "budget-copy.md").write_text(notes)  # the same content, elsewhere
    (root / "2024" / "notes" / "garden.txt").write_text("Tomatoes need full sun and regular watering in summer.")
    (root / "2024" / "notes" / "budget-plan.txt").write_text("Next year's budget: travel and marketing.")
    for i in range(3):
        write_image(root / "photos" / f"img{i}.jpg", seed=i, size=(96 + 200 * i, 64 + 150 * i))
    make_video(root / "video" / "scenes.mp4", [("color=c=red", 2.0), ("color=c=blue", 2.0)], audio=True)
    make_video(root / "video" / "old.avi", [("testsrc", 2.0)], codec=["-c:v", "mpeg4", "-q:v", "5"])
    make_pdf(root / "docs" / "report.pdf", ["Harbour inspection report\nThe pier needs new timber.",
                                            "Appendix\nLighthouse lamp maintenance schedule."])
    days = {"2023/notes/budget.md": "2023-03-01", "2024/notes/budget-copy.md": "2024-06-01",
            "2024/notes/garden.txt": "2024-02-01", "2024/notes/budget-plan.txt": "2024-09-01"}
    for rel, day in days.items():
        os.utime(root / rel, (at(day), at(day)))
    settings = make_settings(tmp_path_factory.mktemp("api-data"), models={"clip": "fake", "text": "fake"})
    embedders = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}
    lib = Library(settings)
    report = index_direct(lib, settings, [root], embedders)
    assert not report.get("failed"), report.get("failed")
    queue = Queue()
    service = SearchService(embedders, lib, settings)
    backend = Backend(settings=settings, service=lambda: service, store=lib, queue=lambda: queue, token=lambda: TOKEN)
    from fastapi.testclient import TestClient

    client = TestClient(create_app(backend), base_url="http://msearch.test")
    yield client, root, lib, queue
    lib.close()


def search(client, **body) -> dict:
    r = client.post("/api/v1/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_results_carry_file_facts_and_moments(api):
    client, root, _, _ = api
    r = client.post("/api/v1/search", json={"query": "quarterly budget travel", "kinds": ["text"]})
    assert r.status_code == 200 and "store;dur=" in r.headers["server-timing"]
    body = r.json()
    top = body["results"][0]
    assert top["path"].endswith("budget.md") or top["path"].endswith("budget-copy.md")
    assert top["size"] == len("The finance team reviewed the quarterly budget and cut travel spending.")
    assert top["modified"] in ("2023-03-01T00:00:00Z", "2024-06-01T00:00:00Z")
    assert top["moments"][0]["score"] == top["score"] and top["duration_s"] is None
    assert body["total"] >= len(body["results"]) and isinstance(body["total_exact"], bool)
    videos = search(client, query="anything", kinds=["video"])["results"]
    video = next(r for r in videos if r["path"].endswith("scenes.mp4"))
    assert video["duration_s"] == pytest.approx(4.0, abs=0.2)
    assert len({(m["start_s"], m["end_s"]) for m in video["moments"]}) == len(video["moments"]) >= 1
    assert (video["start_s"], video["end_s"]) == (video["moments"][0]["start_s"], video["moments"][0]["end_s"])


def test_filters_apply_to_folders_dates_sizes_and_durations(api):
    client, root, _, _ = api
    folder = search(client, query="budget", kinds=["text"], filters={"path_prefix": str(root / "2024")})
    paths = [r["path"] for r in folder["results"]]
    assert paths and all(p.startswith(str(root / "2024") + "/") for p in paths)
    assert str(root / "2024" / "notes" / "budget-copy.md") in paths  # the copy, not the 2023 original
    two = search(client, query="budget", kinds=["text"],
                 filters={"path_prefix": [str(root / "2023"), str(root / "2024" / "notes") + "/"]})
    assert str(root / "2023" / "notes" / "budget.md") in [r["path"] for r in two["results"]]
    recent = search(client, query="budget", kinds=["text"], top_k=20,
                    filters={"modified_after": "2024-05-01", "modified_before": "2024-12-31T23:59:59+00:00"})
    assert {Path(r["path"]).name for r in recent["results"]} == {"budget-copy.md", "budget-plan.txt"}
    sizes = sorted((root / "photos" / f"img{i}.jpg").stat().st_size for i in range(3))
    big = search(client, query="picture", kinds=["image"], filters={"min_size": sizes[1]})
    assert sorted(r["size"] for r in big["results"]) == sizes[1:]
    short = search(client, query="anything", filters={"max_duration_s": 3.0})
    assert [Path(r["path"]).name for r in short["results"]] == ["old.avi"]  # no duration: no match
    long = search(client, query="anything", filters={"min_duration_s": 3.0})
    assert {r["kind"] for r in long["results"]} == {"video"} and long["total_exact"]


def test_paging_order_and_score_cut_off(api):
    client, _, _, _ = api
    whole = search(client, query="budget travel summer", top_k=6)
    first, second = (search(client, query="budget travel summer", top_k=3, offset=o) for o in (0, 3))
    assert [r["file_id"] for r in first["results"] + second["results"]] == [r["file_id"] for r in whole["results"]]
    assert second["offset"] == 3 and second["total"] >= 6
    by_date = search(client, query="budget", kinds=["text"], sort="date", top_k=10)["results"]
    dates = [r["modified"] for r in by_date]
    assert dates == sorted(dates, reverse=True) and len(dates) >= 3
    cut = search(client, query="budget travel", kinds=["text"], min_relative_score=1.0)
    assert cut["results"] and {r["score"] for r in cut["results"]} == {cut["results"][0]["score"]}
    assert cut["total"] == len(cut["results"])


@pytest.mark.parametrize("body, status, words", [
    ({"query": "x", "filters": {"path_prefx": "/tmp"}}, 422, "path_prefx"),
    ({"query": "x", "filters": {"modified_after": "last tuesday"}}, 422, "ISO 8601"),
    ({"query": "x", "filters": {"modified_after": "2024-05-01", "modified_before": "2024-01-01"}}, 422, "after"),
    ({"query": "x", "filters": {"path_prefix": "relative/dir"}}, 422, "absolute"),
    ({"query": "x", "offset": 500}, 400, "past the results"),
    ({"query": "x", "offset": 995, "top_k": 10}, 400, "MAX_RESULTS"),
    ({"query": "x", "sort": "size"}, 422, "sort"),
    ({"query": "x", "min_relative_score": 2}, 422, "min_relative_score"),
    ({"query": "x", "top_k": 0}, 400, "top_k"),
    ({"query": "x", "kinds": ["movies"]}, 400, "unknown kind"),
    ({"query": "   "}, 400, "empty"),
])
def test_bad_search_requests_are_4xx_with_a_reason(api, body, status, words):
    client, _, _, _ = api
    r = client.post("/api/v1/search", json=body)
    assert r.status_code == status, r.text
    assert words in json.dumps(r.json()["detail"])


def test_similar_uses_stored_vectors_and_leaves_the_file_out(api):
    client, root, lib, _ = api
    img = file_id_for(str(root / "photos" / "img1.jpg"))
    r = client.post("/api/v1/search/similar", json={"file_id": img, "kinds": ["image"]})
    assert r.status_code == 200, r.text
    paths = [x["path"] for x in r.json()["results"]]
    assert paths and str(root / "photos" / "img1.jpg") not in paths
    copy = file_id_for(str(root / "2024" / "notes" / "budget-plan.txt"))
    notes = client.post("/api/v1/search/similar", json={"file_id": copy, "kinds": ["text"]}).json()["results"]
    assert notes[0]["path"].endswith(("budget.md", "budget-copy.md"))  # shares "budget" and "travel"
    video = file_id_for(str(root / "video" / "scenes.mp4"))
    moment = client.post("/api/v1/search/similar", json={"file_id": video, "start_s": 3.0})
    assert moment.status_code == 200, moment.text
    assert client.post("/api/v1/search/similar", json={"file_id": video, "start_s": 99.0}).status_code == 404
    assert client.post("/api/v1/search/similar", json={"file_id": "0" * 16}).status_code == 404
    filtered = client.post("/api/v1/search/similar", json={"file_id": img, "filters": {"path_prefix": str(root / "2023")}})
    assert filtered.status_code == 200 and filtered.json()["results"] == []


def test_content_serves_ranges_of_indexed_files_only(api, tmp_path):
    client, root, lib, _ = api
    path = root / "video" / "scenes.mp4"
    fid = file_id_for(str(path))
    whole = client.get(f"/api/v1/files/{fid}/content")
    assert whole.status_code == 200 and whole.content == path.read_bytes()
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/v1/files/{fid}/content", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == path.read_bytes()[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{path.stat().st_size}"
    past = client.get(f"/api/v1/files/{fid}/content", headers={"Range": f"bytes={path.stat().st_size + 10}-"})
    assert past.status_code == 416
    assert client.get(f"/api/v1/files/{'f' * 16}/content").status_code == 404
    text = client.get(f"/api/v1/files/{file_id_for(str(root / '2024' / 'notes' / 'garden.txt'))}/content")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    # A file that changed after it was indexed is not served as the indexed one.
    changed = root / "2024" / "notes" / "budget-plan.txt"
    saved = changed.read_bytes(), changed.stat().st_mtime
    try:
        changed.write_text("something else entirely")
        r = client.get(f"/api/v1/files/{file_id_for(str(changed))}/content")
        assert r.status_code == 409 and "changed since it was indexed" in r.json()["detail"]
    finally:
        changed.write_bytes(saved[0])
        os.utime(changed, (saved[1], saved[1]))


def test_clip_cuts_a_browser_playable_moment_once(api):
    client, root, lib, _ = api
    fid = file_id_for(str(root / "video" / "old.avi"))
    r = client.get(f"/api/v1/files/{fid}/clip", params={"start_s": 0.5, "end_s": 1.5})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/webm" and r.content[:4] == b"\x1a\x45\xdf\xa3"  # EBML
    probe = subprocess.run([ffmpeg(), "-hide_banner", "-i", "pipe:0"], input=r.content, capture_output=True)
    assert b"vp9" in probe.stderr
    cached = list((lib.settings.data_dir / "cache" / "clips").iterdir())
    assert len(cached) == 1
    again = client.get(f"/api/v1/files/{fid}/clip", params={"start_s": 0.5, "end_s": 1.5})
    assert again.content == r.content and list((lib.settings.data_dir / "cache" / "clips").iterdir()) == cached
    mp4 = client.get(f"/api/v1/files/{fid}/clip", params={"start_s": 0, "end_s": 1, "format": "mp4"})
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    for params, status in (({"start_s": 1.0, "end_s": 0.5}, 400), ({"start_s": 0, "end_s": 500}, 400),
                           ({"start_s": 30, "end_s": 31}, 400), ({"start_s": "x", "end_s": 1}, 422)):
        assert client.get(f"/api/v1/files/{fid}/clip", params=params).status_code == status, params
    note = file_id_for(str(root / "2024" / "notes" / "garden.txt"))
    assert client.get(f"/api/v1/files/{note}/clip", params={"start_s": 0, "end_s": 1}).status_code == 400


def test_page_images_of_pdfs(api):
    client, root, _, _ = api
    fid = file_id_for(str(root / "docs" / "report.pdf"))
    r = client.get(f"/api/v1/files/{fid}/pages/2", params={"side": 300})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    from PIL import Image
    import io

    assert min(Image.open(io.BytesIO(r.content)).size) == 300
    assert client.get(f"/api/v1/files/{fid}/pages/3").status_code == 400
    assert client.get(f"/api/v1/files/{fid}/pages/0").status_code == 422
    img = file_id_for(str(root / "photos" / "img0.jpg"))
    assert client.get(f"/api/v1/files/{img}/pages/1").status_code == 400


def test_openai_compatible_embeddings(api):
    client, _, _, _ = api
    models = client.get("/v1/models").json()
    assert {m["id"] for m in models["data"]} == {"text", "clip"} and models["object"] == "list"
    r = client.post("/v1/embeddings", json={"model": "text", "input": ["harbour", "budget"]})
    assert r.status_code == 200, r.text
    body = r.json()
    want = FakeEmbedder("text").embed_texts(["harbour", "budget"])
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == pytest.approx(want[1].tolist(), abs=1e-6)
    assert body["usage"]["prompt_tokens"] == 2
    one = client.post("/v1/embeddings", json={"model": "fake", "input": "harbour"})
    assert one.status_code == 200 and len(one.json()["data"]) == 1  # the role's model id works too
    assert client.post("/v1/embeddings", json={"model": "clap", "input": "x"}).status_code == 404
    assert client.post("/v1/embeddings", json={"model": "text", "input": []}).status_code == 400
    assert client.post("/v1/embeddings", json={"model": "text"}).status_code == 422


def test_the_control_api_needs_the_token(api):
    client, root, _, queue = api
    assert client.post("/api/v1/files/process", json={"path": str(root)}).status_code == 401
    assert client.post("/api/v1/system/reset", json={"reset_type": "index"},
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/v1/system/reset", json={"reset_type": "index"},  # not ASCII: refused, no crash
                       headers={"Authorization": "Bearer é".encode()}).status_code == 401
    assert queue.submitted == []
    r = client.get("/api/v1/files/" + "0" * 16)
    assert r.status_code == 404 and "detail" in r.json()


def test_the_openapi_schema_names_the_new_routes_and_their_errors(api):
    client, _, _, _ = api
    spec = client.get("/openapi.json").json()
    for route in ("/api/v1/search/similar", "/api/v1/files/{file_id}/content", "/api/v1/files/{file_id}/clip",
                  "/api/v1/files/{file_id}/pages/{number}", "/v1/embeddings", "/v1/models"):
        assert route in spec["paths"], route
    assert "400" in spec["paths"]["/api/v1/search"]["post"]["responses"]
    assert "416" in spec["paths"]["/api/v1/files/{file_id}/content"]["get"]["responses"]


def test_upload_searches_take_the_same_options_as_form_fields(api):
    client, root, _, _ = api
    image = (root / "photos" / "img1.jpg").read_bytes()
    r = client.post("/api/v1/search/image", files={"file": ("q.jpg", image)},
                    data={"kinds": ["image"], "top_k": "1", "offset": "1", "sort": "relevance"})
    assert r.status_code == 200, r.text
    assert r.json()["offset"] == 1 and len(r.json()["results"]) == 1 and r.json()["total"] >= 2
    only = client.post("/api/v1/search/image", files={"file": ("q.jpg", image)},
                       data={"filters": json.dumps({"path_prefix": str(root / "video")})})
    assert {x["kind"] for x in only.json()["results"]} == {"video"}
    bad = client.post("/api/v1/search/image", files={"file": ("q.jpg", image)}, data={"filters": "{not json"})
    assert bad.status_code == 400 and "JSON" in bad.json()["detail"]
    unknown = client.post("/api/v1/search/image", files={"file": ("q.jpg", image)},
                          data={"filters": json.dumps({"folder": "/x"})})
    assert unknown.status_code == 400 and "folder" in unknown.json()["detail"]
    no_clap = client.post("/api/v1/search/audio", files={"file": ("q.wav", b"RIFF")})
    assert no_clap.status_code == 422 and "CLAP" in no_clap.json()["detail"]


@pytest.mark.parametrize("header, status", [
    ("bytes=" + ",".join(f"{i * 10}-{i * 10 + 5}" for i in range(20)), 416),  # too many ranges
    ("bytes=0-100,50-150", 416),  # overlapping
    ("bytes=abc", 400), ("items=0-1", 400), ("bytes=9-3", 400),
    ("bytes=0-9,20-29", 206),  # two ranges: a multipart answer
])
def test_range_headers_that_ask_too_much_are_refused_before_reading(api, header, status):
    client, root, _, _ = api
    fid = file_id_for(str(root / "video" / "scenes.mp4"))
    r = client.get(f"/api/v1/files/{fid}/content", headers={"Range": header})
    assert r.status_code == status, r.text[:200]
    if status == 416:
        assert r.headers["content-range"].startswith("bytes */")


def test_served_media_cannot_escape_to_other_files(api, tmp_path):
    client, root, lib, _ = api
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    target = root / "2024" / "notes" / "garden.txt"
    fid = file_id_for(str(target))
    saved = target.read_bytes(), target.stat()
    try:
        target.unlink()
        target.symlink_to(secret)  # a link put where an indexed file was
        r = client.get(f"/api/v1/files/{fid}/content")
        assert r.status_code == 409 and "not for the web" not in r.text
    finally:
        target.unlink()
        target.write_bytes(saved[0])
        os.utime(target, (saved[1].st_atime, saved[1].st_mtime))
    assert client.get(f"/api/v1/files/{fid}/content").status_code == 200
    # A link swapped in after the checks, before the bytes are read: what is sent is the file
    # that was checked (opened then), never the link's target.
    import serve.api as api_module

    def swap(header, size):
        target.rename(tmp_path / "garden.kept")
        target.symlink_to(secret)
        return check(header, size)

    check, api_module.check_ranges = api_module.check_ranges, swap
    try:
        r = client.get(f"/api/v1/files/{fid}/content")
        assert r.status_code == 200 and r.content == saved[0] and "not for the web" not in r.text
    finally:
        api_module.check_ranges = check
        target.unlink()
        (tmp_path / "garden.kept").rename(target)
    assert client.get(f"/api/v1/files/{fid}/content").content == saved[0]
    # A folder on the way replaced by a link to a folder holding a file of the same name and size.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "garden.txt").write_bytes(b"x" * len(saved[0]))
    os.utime(elsewhere / "garden.txt", (saved[1].st_atime, saved[1].st_mtime))
    notes = root / "2024" / "notes"
    notes.rename(root / "2024" / "notes.real")
    try:
        notes.symlink_to(elsewhere)
        assert client.get(f"/api/v1/files/{fid}/content").status_code == 409
    finally:
        notes.unlink()
        (root / "2024" / "notes.real").rename(notes)
    # With MSEARCH_ROOTS set, a file outside them is not served, even if indexed.
    from msearch.search import SearchService
    from fastapi.testclient import TestClient

    narrow = lib.settings.model_copy(update={"roots": (str(root / "photos"),)})
    app = create_app(Backend(settings=narrow, service=lambda: SearchService({}, lib, narrow), store=lib,
                             queue=lambda: Queue(), token=lambda: TOKEN))
    with TestClient(app) as other:
        assert other.get(f"/api/v1/files/{fid}/content").status_code == 404
        photo = file_id_for(str(root / "photos" / "img0.jpg"))
        assert other.get(f"/api/v1/files/{photo}/content").status_code == 200


def test_uploads_over_the_limit_are_refused_before_they_are_read(api):
    client, root, lib, _ = api
    from fastapi.testclient import TestClient
    from msearch.search import SearchService

    small = lib.settings.model_copy(update={"serve": lib.settings.serve.model_copy(update={"max_upload_bytes": 1000})})
    app = create_app(Backend(settings=small, service=lambda: SearchService({}, lib, small), store=lib,
                             queue=lambda: Queue(), token=lambda: TOKEN))
    big = b"\xff\xd8" + os.urandom(200_000)
    with TestClient(app) as other:
        r = other.post("/api/v1/search/image", files={"file": ("big.jpg", big)})
        assert r.status_code == 413 and "MAX_UPLOAD_BYTES" in r.json()["detail"]

        def chunks():  # no Content-Length: counted as it arrives
            for i in range(0, len(big), 8192):
                yield big[i:i + 8192]

        r = other.post("/api/v1/search/image", content=chunks(),
                       headers={"content-type": "multipart/form-data; boundary=x"})
        assert r.status_code == 413


def test_a_rotated_token_replaces_the_old_one_at_once(tmp_path):
    from fastapi.testclient import TestClient

    from msearch.auth import TokenFile, ensure_token, rotate_token

    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"})
    lib = Library(settings)
    try:
        old = ensure_token(settings)
        queue = Queue()
        app = create_app(Backend(settings=settings, service=lambda: SearchService({}, lib, settings), store=lib,
                                 queue=lambda: queue, token=TokenFile(settings)))
        body = {"reset_type": "index"}
        with TestClient(app) as client:
            assert client.post("/api/v1/system/reset", json=body, headers={"Authorization": f"Bearer {old}"}).status_code == 200
            new = rotate_token(settings)
            assert new != old and (settings.token_path.stat().st_mode & 0o777) == 0o600
            assert client.post("/api/v1/system/reset", json=body, headers={"Authorization": f"Bearer {old}"}).status_code == 401
            assert client.post("/api/v1/system/reset", json=body, headers={"Authorization": f"Bearer {new}"}).status_code == 200
    finally:
        lib.close()
