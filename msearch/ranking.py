"""Ranking: fuse the stores' ranked lists and turn hits into file results with their moments.

Scores of different models are not comparable, ranks are: lists are fused by reciprocal rank.
Neighbouring matching scenes (or sound windows) of a file become one moment; the keyframe, the
sound and the speech of one moment (or the chunks and image of one page) become one hit.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Mapping

from msearch.store.vectors import Hit

RRF_K = 60
MERGE_MARGIN = 0.03  # cosine similarity: neighbouring scenes (or sound windows) this close merge
MERGE_SPACES = ("clip", "clap")  # spaces whose neighbouring units of a file are merged
TIMED_KINDS = ("video", "audio")


def thumbnail_url(thumb_id: str | None) -> str | None:
    return f"/api/v1/thumbnails/{thumb_id}" if thumb_id else None


# Text space: a unit's score is its cosine similarity plus this much of its keyword (BM25) score
# relative to the query's best keyword match. benchmarks/crosslingual.py chose it (with the
# default multilingual model): 0.02 lifts queries for names and codes (recall@1 0.70 -> 0.80)
# and leaves paraphrases and English-to-Chinese queries as the dense list has them; larger
# weights trade cross-lingual queries for keyword ones, one query at a time. Reciprocal rank
# fusion of the two lists (what msearch did before) put any unit both lists found above the
# dense list's best: recall@1 of Chinese queries for English documents fell from 0.75 to 0.
KEYWORD_WEIGHT = 0.02


def rank(lists: list[list[Hit]], queries=None) -> list[Hit]:
    """The stores' ranked lists as one list of moments, best first (``queries``: what each list
    answered; a dense and a keyword list of one space become one list first, see :func:`hybrid`)."""
    return join_moments(merge_moments(fuse(combine(queries, lists) if queries else lists)))


def combine(queries, lists: list[list[Hit]]) -> list[list[Hit]]:
    """Each space's dense and keyword (``bm25``) lists as one :func:`hybrid` list; others as they are."""
    from msearch.store.vectors import SPARSE

    keyword = {q.space: hits for q, hits in zip(queries, lists) if q.using == SPARSE}
    out = []
    for q, hits in zip(queries, lists):
        if q.using == SPARSE:
            if not any(other.space == q.space and other.using != SPARSE for other in queries):
                out.append(hits)  # a keyword list on its own
            continue
        out.append(hybrid(hits, keyword[q.space]) if q.space in keyword else hits)
    return out


def hybrid(dense: list[Hit], keyword: list[Hit], weight: float | None = None) -> list[Hit]:
    """One ranked list from a space's dense and keyword lists: cosine plus ``weight`` times the
    keyword score over the query's best keyword score. A unit the dense list did not reach
    counts the dense list's lowest cosine."""
    weight = KEYWORD_WEIGHT if weight is None else weight
    if not keyword:
        return dense
    if not dense:
        return keyword
    best = keyword[0].score or 1.0
    floor = dense[-1].score
    scores = {h.id: h.score for h in dense}
    found = {h.id: h for h in dense}
    for h in keyword:
        scores[h.id] = scores.get(h.id, floor) + weight * h.score / best
        found.setdefault(h.id, h)
    cosine = {h.id: h.score for h in dense}
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [Hit(i, scores[i], found[i].payload, cosine.get(i, floor)) for i in order]


MAX_MOMENTS = 50  # moments listed per file result


def search(vectors, queries, files_of: Callable[[list[str]], Mapping[str, list[dict]]],
           admits: Callable[[dict], bool] | None = None) -> dict:
    """Query the vector store, rank, and return the file results of every candidate found
    (``results``, best first) and whether the store had no more to give (``exhausted``: every
    ranked list came back shorter than its limit). ``files_of(hashes)`` gives the indexed files
    of each content (the catalog's answer, in one call); ``admits(file)`` drops the files a
    filter excludes (a content matches the store's filter when any file holding it does)."""
    lists = vectors.search(queries)
    hits = rank(lists, queries)
    files = files_of(list(dict.fromkeys(h.payload["content_hash"] for h in hits)))
    exhausted = all(len(hits_) < q.limit for q, hits_ in zip(queries, lists))
    return {"results": file_results(hits, files, admits), "exhausted": exhausted}


def file_results(hits: list[Hit], files: Mapping[str, list[dict]], admits=None) -> list[dict]:
    """Ranked moments as results of the indexed ``files`` holding each content (content hash ->
    file rows): one result per file, at its best moment, listing every matching moment of it
    (a scene, a sound, a spoken line, a page, a text chunk) best first."""
    from msearch.query import iso

    results: dict[str, dict] = {}
    for hit in hits:
        p = hit.payload
        moment = {"start_s": p.get("start_s"), "end_s": p.get("end_s"), "page": p.get("page"),
                  "score": round(hit.score, 6), "text": p.get("text"), "thumbnail": thumbnail_url(p.get("thumbnail"))}
        for f in files.get(p["content_hash"], []):
            if admits is not None and not admits(f):
                continue
            result = results.get(f["file_id"])
            if result is None:
                results[f["file_id"]] = {
                    "path": f["path"], "file_id": f["file_id"], "kind": f["kind"], "score": moment["score"],
                    "start_s": moment["start_s"], "end_s": moment["end_s"], "page": moment["page"],
                    "text": moment["text"], "thumbnail": moment["thumbnail"], "modified": iso(f.get("mtime")),
                    "size": f.get("size"), "duration_s": f.get("duration_s"), "moments": [moment],
                }
            elif len(result["moments"]) < MAX_MOMENTS:
                result["moments"].append(moment)
    return list(results.values())


def fuse(lists: list[list[Hit]], k: int = RRF_K) -> list[Hit]:
    """Reciprocal rank fusion: scores of different models are not comparable, ranks are."""
    scores: dict[str, float] = defaultdict(float)
    payloads: dict[str, dict] = {}
    raw: dict[str, float] = {}
    for hits in lists:
        for rank, hit in enumerate(hits):
            scores[hit.id] += 1.0 / (k + rank + 1)
            payloads.setdefault(hit.id, hit.payload)
            raw.setdefault(hit.id, hit.score)
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [Hit(i, scores[i], payloads[i], raw[i]) for i in order]


def _space(payload: dict) -> str:
    # Points written before payloads named their space: only keyframes had times then.
    return payload.get("space") or ("text" if payload.get("text") else "clip")


def merge_moments(hits: list[Hit], margin: float = MERGE_MARGIN) -> list[Hit]:
    """Adjacent matching scenes (or sound windows) of one file become one hit spanning them,
    with the best member's score and thumbnail; other hits pass through. Neighbours match when
    the store's similarity is within ``margin`` of each other's (fused scores say nothing about
    how close they are)."""
    runs: dict[tuple[str, str], list[Hit]] = defaultdict(list)
    out: list[Hit] = []
    for hit in hits:
        p = hit.payload
        if p.get("kind") in TIMED_KINDS and p.get("start_s") is not None and _space(p) in MERGE_SPACES:
            runs[(p["content_hash"], _space(p))].append(hit)
        else:
            out.append(hit)
    for file_hits in runs.values():
        file_hits.sort(key=lambda h: h.payload["unit"])
        run = [file_hits[0]]
        for hit in file_hits[1:] + [None]:
            if hit is not None and hit.payload["unit"] == run[-1].payload["unit"] + 1 \
                    and abs(hit.raw - run[-1].raw) <= margin:
                run.append(hit)
                continue
            best = max(run, key=lambda h: h.score)
            payload = {**best.payload, "start_s": run[0].payload["start_s"], "end_s": run[-1].payload["end_s"]}
            out.append(Hit(best.id, best.score, payload, best.raw))
            run = [hit]
    out.sort(key=lambda h: (-h.score, h.id))
    return out


def join_moments(hits: list[Hit]) -> list[Hit]:
    """The keyframe, the sound and the speech of the same moment of a file become one hit (and
    the text chunks and the image of the same document page).

    In score order, a timed hit joins the first moment of its file whose span it overlaps; the
    moment keeps its best member's span, adds up the members' scores (as reciprocal rank fusion
    does for one item found by several lists), and takes a snippet and a thumbnail from
    whichever member has one.
    """
    moments: list[Hit] = []
    by_file: dict[str, list[int]] = defaultdict(list)
    for hit in sorted(hits, key=lambda h: (-h.score, h.id)):
        p = hit.payload
        timed = p.get("kind") in TIMED_KINDS and p.get("start_s") is not None
        paged = p.get("kind") == "page" and p.get("page") is not None
        if not (timed or paged):
            moments.append(hit)
            continue
        for i in by_file[p["content_hash"]]:
            m = moments[i].payload
            if (paged and m.get("page") == p["page"]) or \
                    (timed and p["start_s"] < m["end_s"] and m["start_s"] < p["end_s"]):
                joined = {**m, "text": m.get("text") or p.get("text"), "thumbnail": m.get("thumbnail") or p.get("thumbnail")}
                moments[i] = Hit(moments[i].id, moments[i].score + hit.score, joined, moments[i].raw)
                break
        else:
            by_file[p["content_hash"]].append(len(moments))
            moments.append(hit)
    moments.sort(key=lambda h: (-h.score, h.id))
    return moments


