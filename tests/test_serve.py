"""Search over real HTTP on 127.0.0.1 through Ray Serve; nothing listens elsewhere."""

import io

import httpx
import pytest
from PIL import Image

from conftest import (
    ffmpeg,
    free_port,
    listeners,
    make_corpus,
    make_settings,
    non_loopback,
    sound_file,
    wait_no_ray_processes,
)

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes


@pytest.fixture(scope="module")
def http(tmp_path_factory, tiny_clip, tiny_clap, minilm_id):
    before = listeners()
    from ray import serve

    from pipelines.cluster import connect, shutdown
    from pipelines.index import run_index
    from pipelines.owner import stop_owner
    from serve.app import build_app

    tmp = tmp_path_factory.mktemp("serve")
    corpus = make_corpus(tmp / "corpus")
    sounds = tmp / "sounds"
    sounds.mkdir()
    sound_file(sounds / "mix.wav")
    settings = make_settings(tmp / "data", models={"clip": tiny_clip, "text": minilm_id, "clap": tiny_clap},
                             port=free_port(), roots=[str(corpus), str(sounds)],
                             serve={"ingress_replicas": 2})
    assert connect(settings) is True
    run_index(settings, [str(corpus), str(sounds)], progress=False)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings), name="msearch", route_prefix="/", blocking=False)
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=60) as client:
        client.settings = settings
        yield client, corpus, before
    serve.shutdown()
    stop_owner(settings)
    shutdown()
    assert not wait_no_ray_processes(), "processes left behind"


def test_health(http):
    client, _, _ = http
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["query_models"] == ["clap", "clip", "text"]


def test_text_search_with_kinds(http):
    client, corpus, _ = http
    r = client.post("/api/v1/search", json={"query": "the finance team cut travel", "kinds": ["text"], "top_k": 2})
    assert r.status_code == 200
    body = r.json()
    assert [x["path"] for x in body["results"]][0] == str(corpus / "docs" / "budget.md")
    first = body["results"][0]
    assert set(first) == {"path", "file_id", "kind", "score", "start_s", "end_s", "page", "text", "thumbnail",
                          "modified", "size", "duration_s", "moments"}
    assert first["kind"] == "text" and first["thumbnail"] is None and first["start_s"] is None
    assert "budget" in first["text"]
    assert len(body["results"]) == 2
    # Where the time went, for operators and browsers' developer tools.
    timing = dict(part.split(";dur=") for part in r.headers["Server-Timing"].split(", "))
    assert set(timing) == {"embed", "store", "total"}
    assert 0 < float(timing["embed"]) + float(timing["store"]) <= float(timing["total"]) <= body["took_ms"] + 0.1


def test_chinese_query(http):
    client, corpus, _ = http
    r = client.post("/api/v1/search", json={"query": "汽车", "kinds": ["text"]})
    assert r.json()["results"][0]["path"] == str(corpus / "docs" / "rain.txt")


def test_image_search_and_thumbnail(http):
    client, corpus, _ = http
    data = (corpus / "photos" / "img2.jpg").read_bytes()
    r = client.post("/api/v1/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data={"top_k": "3"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["path"] == str(corpus / "photos" / "img2.jpg") and results[0]["kind"] == "image"
    thumb = client.get(results[0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size[0] <= 256


@pytest.mark.parametrize("body,code", [
    ({"query": ""}, 400),
    ({"query": "x", "kinds": ["sculpture"]}, 400),
    ({"query": "x", "top_k": 0}, 400),
    ({"kinds": ["text"]}, 422),
])
def test_bad_requests_get_clear_errors(http, body, code):
    client, _, _ = http
    r = client.post("/api/v1/search", json=body)
    assert r.status_code == code
    assert r.json()["detail"]


def test_sound_search(http):
    from msearch.media import audio

    client, corpus, _ = http
    mix = corpus.parent / "sounds" / "mix.wav"
    window = list(audio.windows(mix, ffmpeg(), 48000, 10, 5, 60, -60))[1]
    r = client.post("/api/v1/search/audio", files={"file": ("q.wav", audio.wav_bytes(window.samples, 48000))},
                    data={"kinds": ["audio"]})
    assert r.status_code == 200, r.text
    first = r.json()["results"][0]
    assert first["path"] == str(mix) and first["kind"] == "audio"
    assert (first["start_s"], first["end_s"]) == (window.start_s, window.end_s)
    bad = client.post("/api/v1/search/audio", files={"file": ("q.wav", b"RIFF\x00\x00WAVE nonsense")})
    assert bad.status_code == 400 and "ffmpeg" in bad.json()["detail"]


def test_bad_uploads_and_unknown_thumbnails(http):
    client, _, _ = http
    r = client.post("/api/v1/search/image", files={"file": ("x.jpg", b"not an image", "image/jpeg")})
    assert r.status_code == 400 and "cannot decode image" in r.json()["detail"]
    assert client.get("/api/v1/thumbnails/" + "0" * 32).status_code == 404
    assert client.get("/api/v1/thumbnails/..%2F..%2Fcatalog.duckdb").status_code == 404


def test_files_status_and_docs(http):
    client, corpus, _ = http
    status = client.get("/api/v1/status").json()
    assert status["files"] == {"indexed": 10, "failed": 1, "skipped": 2}  # 9 of the corpus, 1 sound
    from msearch.library import file_id_for

    shown = client.get(f"/api/v1/files/{file_id_for(str(corpus / 'docs' / 'budget.md'))}").json()
    assert shown["status"] == "indexed" and shown["units"]
    assert client.get("/api/v1/files/nope").status_code == 404
    assert client.get("/docs").status_code == 200
    page = client.get("/")  # the search page, from the same Serve app
    assert page.status_code == 200 and '<script type="module" src="/static/app.js">' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200
    assert status["query_models"] == ["clap", "clip", "text"] and "missing_models" in status
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/api/v1/search", "/api/v1/search/image", "/api/v1/thumbnails/{thumb_id}"} <= set(paths)


def test_everything_listens_on_loopback_only(http):
    _, _, before = http
    assert non_loopback(listeners()) - non_loopback(before) == set()


def _token(client) -> dict:
    return {"Authorization": "Bearer " + client.settings.token_path.read_text().strip()}


def test_control_api_needs_the_token_and_paths_inside_the_roots(http):
    import os
    import stat

    client, corpus, _ = http
    assert stat.S_IMODE(os.stat(client.settings.token_path).st_mode) == 0o600
    doc = str(corpus / "docs" / "budget.md")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        r = client.post("/api/v1/files/process", json={"path": doc}, headers=headers)
        assert r.status_code == 401 and "token" in r.json()["detail"]
        assert client.post("/api/v1/files/batch-process", json={"paths": [doc]}, headers=headers).status_code == 401
        assert client.post("/api/v1/system/reset", json={"reset_type": "index"}, headers=headers).status_code == 401
    token = _token(client)
    for outside in ("/etc/passwd", str(corpus / ".." / ".." / "etc"), str(client.settings.data_dir / "catalog.duckdb")):
        r = client.post("/api/v1/files/process", json={"path": outside}, headers=token)
        assert r.status_code == 403 and "outside" in r.json()["detail"], outside
    assert client.post("/api/v1/files/process", json={"path": str(corpus / "nope.txt")}, headers=token).status_code == 404
    assert client.post("/api/v1/files/batch-process", json={"paths": []}, headers=token).status_code == 422
    assert client.post("/api/v1/system/reset", json={"reset_type": "everything"}, headers=token).status_code == 422
    assert client.get("/api/v1/files/process-status/0123456789abcdef").status_code == 404


def test_control_api_indexes_a_new_file(http):
    """Submitted through one ingress replica, its progress is seen through either of two."""
    import time

    from ray import serve

    client, corpus, _ = http
    ingress = serve.status().applications["msearch"].deployments["search-api"]
    assert ingress.replica_states.get("RUNNING") == 2, ingress
    new = corpus / "docs" / "lighthouse.txt"
    new.write_text("The lighthouse keeper logged a storm and a broken lamp.\n")
    r = client.post("/api/v1/files/process", json={"path": str(new)}, headers=_token(client))
    assert r.status_code == 202, r.text
    file_id = r.json()["file_id"]
    deadline = time.monotonic() + 180
    polls = 0
    while True:
        r = client.get(f"/api/v1/files/process-status/{file_id}")
        assert r.status_code == 200, r.text  # a replica with a queue of its own would not know the file
        status, polls = r.json(), polls + 1
        if status["status"] == "indexed":
            break
        assert status["status"] in ("queued", "processing", "pending"), status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status["progress"] == 1.0 and status["error"] is None and polls > 1
    hits = client.post("/api/v1/search", json={"query": "lighthouse keeper storm", "kinds": ["text"]}).json()
    assert hits["results"][0]["path"] == str(new)


def test_fuzzing_the_openapi_schema_finds_no_server_error(http, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    client, _, _ = http
    schemathesis = Path(sys.executable).parent / "schemathesis"
    url = f"{client.base_url}/openapi.json"
    common = [str(schemathesis), "run", url, "--checks", "not_a_server_error", "--max-examples", "15",
              "--phases", "examples,coverage,fuzzing", "--seed", "1", "--request-timeout", "60"]
    for extra in ([], ["-H", f"Authorization: {_token(client)['Authorization']}",
                       "--exclude-path", "/api/v1/system/reset"]):
        out = subprocess.run(common + extra, capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its cache stays out of the checkout
        assert out.returncode == 0, out.stdout[-6000:]


def test_reset_index_then_everything(http):
    client, corpus, _ = http
    token = _token(client)
    r = client.post("/api/v1/system/reset", json={"reset_type": "index"}, headers=token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["points"] == {} and set(body["files"]) == {"pending"}  # indexed again by the next run
    r = client.post("/api/v1/system/reset", json={"reset_type": "all"}, headers=token)
    assert r.status_code == 200 and r.json()["files"] == {} and r.json()["models"] == {}
    assert client.post("/api/v1/search", json={"query": "budget"}).json()["results"] == []
