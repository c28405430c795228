"""Load: 16 clients send mixed requests to a running `msearch serve` for 60 s while it is idle,
then for 60 s while `msearch index` writes the plumbing corpus through it; then 10,000 more
requests, with every process of the server measured (RSS) before and after them.

    .venv/bin/python benchmarks/load.py [--clients 16] [--seconds 60] [--memory-requests 10000]
                                        [--images 3000] [--texts 2000] [--out results.json]

The mix, by weight: text queries (plain, filtered by folder and date, paged, sorted by date,
with a relative score cut), image and sound queries (uploads), find-similar, thumbnails, byte
ranges of indexed files and the status report. Free models (fake CLIP, CLAP and text model), so
that msearch's own work counts.

Goals: zero errors; p99 while indexing <= 3x the idle p99; no server process grows by more than
50 MB of RSS over the 10,000 requests (measured after a warm-up).
"""

import argparse
import io
import random
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

import httpx
from common import msearch_env, report, run_info, start_serve
from foundation import QUERIES, percentile
from plumbing import make_corpus

BIN = Path(sys.executable).parent
MODELS = {"clip": "fake", "text": "fake", "clap": "fake", "whisper": "none", "colpali": "none", "ocr": "none"}
WARM_UP = 500


def tone(seconds: float, freq: float, seed: int, rate: int = 16000) -> bytes:
    """A WAV of a tone in some noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.5 * np.sin(2 * np.pi * freq * t) + 0.1 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def picture(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((320, 240)).save(buf, "JPEG")
    return buf.getvalue()


class Mix:
    """The requests, by weight; each is (name, method, path, keyword arguments for httpx)."""

    def __init__(self, corpus: Path, files: list[dict]):
        self.folder = str(corpus / "images")
        self.files = files
        self.thumbs = [f["thumbnail"] for f in files if f.get("thumbnail")]
        self.pictures = [picture(1000 + i) for i in range(8)]
        self.sounds = [tone(4, 200 + 150 * i, i) for i in range(4)]
        self.kinds = [(self.text, 20), (self.filtered, 10), (self.paged, 8), (self.image, 10), (self.audio, 8),
                      (self.similar, 10), (self.thumbnail, 14), (self.content, 12), (self.status, 8)]
        self.weights = [w for _, w in self.kinds]

    def pick(self, rng: random.Random):
        return rng.choices([k for k, _ in self.kinds], self.weights)[0](rng)

    def text(self, rng):
        return "text", "POST", "/api/v1/search", {"json": {"query": rng.choice(QUERIES), "top_k": 10}}

    def filtered(self, rng):
        return "filtered", "POST", "/api/v1/search", {"json": {
            "query": rng.choice(QUERIES), "top_k": 10, "sort": rng.choice(["relevance", "date"]),
            "filters": {"path_prefix": self.folder, "modified_after": "2000-01-01"}}}

    def paged(self, rng):
        return "paged", "POST", "/api/v1/search", {"json": {
            "query": rng.choice(QUERIES), "top_k": 10, "offset": rng.choice([10, 20, 40]), "min_relative_score": 0.2}}

    def image(self, rng):
        return "image", "POST", "/api/v1/search/image", {
            "files": {"file": ("query.jpg", rng.choice(self.pictures), "image/jpeg")}, "data": {"top_k": "10"}}

    def audio(self, rng):
        return "audio", "POST", "/api/v1/search/audio", {
            "files": {"file": ("query.wav", rng.choice(self.sounds), "audio/wav")}, "data": {"top_k": "10"}}

    def similar(self, rng):
        return "similar", "POST", "/api/v1/search/similar", {"json": {"file_id": rng.choice(self.files)["file_id"],
                                                                      "top_k": 10}}

    def thumbnail(self, rng):
        return "thumbnail", "GET", rng.choice(self.thumbs), {}

    def content(self, rng):
        start = rng.randrange(0, 300)  # inside the smallest file (a note of ~800 bytes)
        return "content", "GET", f"/api/v1/files/{rng.choice(self.files)['file_id']}/content", {
            "headers": {"Range": f"bytes={start}-{start + rng.randrange(50, 400)}"}}

    def status(self, rng):
        return "status", "GET", "/api/v1/status", {}


def clients(url: str, mix: Mix, n: int, until, out: list, errors: list) -> None:
    """``n`` clients, each sending one request after another until ``until()``; (name, ms) of
    every request into ``out``, every answer that is not a success into ``errors``."""
    def one(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=60) as client:
            while not until():
                name, method, path, kwargs = mix.pick(rng)
                start = time.perf_counter()
                try:
                    r = client.request(method, path, **kwargs)
                    if r.status_code >= 300:
                        errors.append(f"{name} {r.status_code}: {r.text[:200]}")
                    else:
                        r.read()
                except httpx.HTTPError as e:
                    errors.append(f"{name} {e!r}")
                out.append((name, (time.perf_counter() - start) * 1000))

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def summary(samples: list[tuple[str, float]], errors: list, seconds: float) -> dict:
    every = [ms for _, ms in samples]
    by_kind = {}
    for name in sorted({n for n, _ in samples}):
        ms = [v for n, v in samples if n == name]
        by_kind[name] = {"n": len(ms), "p50_ms": round(percentile(ms, 50), 1), "p99_ms": round(percentile(ms, 99), 1)}
    return {"requests": len(every), "per_s": round(len(every) / seconds, 1), "p50_ms": round(percentile(every, 50), 1),
            "p99_ms": round(percentile(every, 99), 1), "max_ms": round(max(every), 1), "errors": len(errors),
            "first_errors": errors[:5], "by_kind": by_kind}


def server_memory(server) -> dict[int, tuple[str, float]]:
    """pid -> (name, RSS MB) of the server and every process under it (Ray's and the workers)."""
    import psutil

    out = {}
    root = psutil.Process(server.pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            cmd = p.cmdline()
            name = cmd[0] if cmd and cmd[0].startswith("ray::") else Path(cmd[0] if cmd else p.name()).name
            if name == "python" or name.startswith("python3"):
                name = " ".join(Path(c).name for c in cmd[:3])
            out[p.pid] = (name, p.memory_info().rss / 2**20)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def growth(before: dict, after: dict) -> list[dict]:
    rows = [{"process": after[pid][0], "pid": pid, "before_mb": round(before[pid][1], 1),
             "after_mb": round(after[pid][1], 1), "growth_mb": round(after[pid][1] - before[pid][1], 1)}
            for pid in before.keys() & after.keys()]
    return sorted(rows, key=lambda r: -r["growth_mb"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--memory-requests", type=int, default=10000)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8768)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = run_info()
    tmp = Path(tempfile.mkdtemp(prefix="msearch-load-"))
    first = tmp / "first"
    make_corpus(first, 300, 300, seed=1)
    (first / "sounds").mkdir()
    for i in range(24):
        (first / "sounds" / f"tone{i:02d}.wav").write_bytes(tone(8, 150 + 60 * i, i))
    make_corpus(tmp / "corpus", args.images, args.texts)
    env = msearch_env(tmp / "data", MODELS, port=str(args.port))
    url, server = start_serve(env, args.port, tmp / "serve.log")
    try:
        subprocess.run([BIN / "msearch", "index", str(first), "--json"], env=env, capture_output=True, check=True)
        with httpx.Client(base_url=url, timeout=60) as client:
            found = {}
            for query in QUERIES + ["harbour", "music", "river"]:
                for kinds in (["image"], ["text"], ["audio"]):
                    r = client.post("/api/v1/search", json={"query": query, "kinds": kinds, "top_k": 20}).json()
                    found.update({x["file_id"]: x for x in r["results"]})
        mix = Mix(first, list(found.values()))
        out["files_for_requests"] = len(mix.files)

        warm: list = []
        clients(url, mix, args.clients, lambda: len(warm) >= WARM_UP, warm, [])
        idle: list = []
        idle_errors: list = []
        deadline = time.monotonic() + args.seconds
        clients(url, mix, args.clients, lambda: time.monotonic() > deadline, idle, idle_errors)
        out["idle"] = summary(idle, idle_errors, args.seconds)

        run = subprocess.Popen([BIN / "msearch", "index", str(tmp / "corpus"), "--json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        start = time.monotonic()
        loaded: list = []
        loaded_errors: list = []
        clients(url, mix, args.clients, lambda: time.monotonic() - start > args.seconds or run.poll() is not None,
                loaded, loaded_errors)
        window = time.monotonic() - start
        stdout, stderr = run.communicate()
        index_s = time.monotonic() - start
        if run.returncode != 0:
            sys.exit(f"msearch index failed:\n{stderr[-3000:]}")
        out["while_indexing"] = {**summary(loaded, loaded_errors, window), "window_s": round(window, 1),
                                 "index_run_s": round(index_s, 1), "files": args.images + args.texts}

        warm = []
        clients(url, mix, args.clients, lambda: len(warm) >= WARM_UP, warm, [])
        before = server_memory(server)
        many: list = []
        many_errors: list = []
        began = time.monotonic()
        clients(url, mix, args.clients, lambda: len(many) >= args.memory_requests, many, many_errors)
        out["memory_run"] = summary(many, many_errors, time.monotonic() - began)
        out["memory_growth"] = growth(before, server_memory(server))
    finally:
        server.terminate()
        server.wait(timeout=120)
    i, w, m = out["idle"], out["while_indexing"], out["memory_run"]
    out["ratio_p99_indexing_over_idle"] = round(w["p99_ms"] / i["p99_ms"], 2)
    top = out["memory_growth"][0]
    report(out, [
        ("clients", args.clients),
        ("idle: requests/s, p50 / p99 / max ms", f"{i['per_s']}, {i['p50_ms']} / {i['p99_ms']} / {i['max_ms']}"),
        ("indexing: requests/s, p50 / p99 / max ms", f"{w['per_s']}, {w['p50_ms']} / {w['p99_ms']} / {w['max_ms']}"),
        ("p99 indexing / idle (goal <= 3)", out["ratio_p99_indexing_over_idle"]),
        ("errors idle / indexing / memory run (goal 0)", f"{i['errors']} / {w['errors']} / {m['errors']}"),
        ("window s, index run s", f"{w['window_s']}, {w['index_run_s']}"),
        (f"largest RSS growth over {m['requests']} requests MB (goal <= 50)", f"{top['growth_mb']} ({top['process']})"),
    ], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
