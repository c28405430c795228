"""Congruence: the embedded engine and qdrant-client (standing in for a server) agree."""

import numpy as np
import pytest

from msearch.sparse import document_vector, query_vector
from msearch.store.vectors import SPARSE, ClientStore, EdgeStore, PointData, SpaceQuery, point_id

DOCS = [
    "red car driving in the rain", "budget meeting on monday", "红色汽车在雨中行驶", "预算会议在周一",
    "a cat sleeping on the sofa", "quarterly budget review and spending", "rain on the window at night",
]


def _fill(store, rng):
    store.ensure_space("clip", 16)
    store.ensure_space("text", 8)
    clip = [PointData(point_id(f"h{i}", 0, "clip", "m"), {"content_hash": f"h{i}", "kind": "image", "unit": 0},
                      rng.standard_normal(16).tolist()) for i in range(60)]
    text = [PointData(point_id(f"t{i}", 0, "text", "m"), {"content_hash": f"t{i}", "kind": "text", "unit": 0},
                      rng.standard_normal(8).tolist(), document_vector(d)) for i, d in enumerate(DOCS)]
    store.upsert("clip", clip)
    store.upsert("text", text)
    return clip, text


@pytest.fixture
def stores(tmp_path):
    edge, client = EdgeStore(tmp_path / "edge"), ClientStore(":memory:")
    _fill(edge, np.random.default_rng(7))
    _fill(client, np.random.default_rng(7))
    yield edge, client
    edge.close()
    client.close()


def _queries():
    rng = np.random.default_rng(11)
    qs = [SpaceQuery("clip", rng.standard_normal(16).tolist(), kinds=("image",), limit=10) for _ in range(5)]
    qs += [SpaceQuery("text", rng.standard_normal(8).tolist(), limit=5) for _ in range(3)]
    qs += [SpaceQuery("text", query_vector(q), using=SPARSE, limit=5)
           for q in ("budget", "汽车", "雨中", "rain car", "预算会议")]
    return qs


def test_same_results_through_both_stores(stores):
    edge, client = stores
    for q, a, b in zip(_queries(), edge.search(_queries()), client.search(_queries())):
        assert [h.id for h in a] == [h.id for h in b], q
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        assert [h.payload for h in a] == [h.payload for h in b]
        assert a, f"no hits for {q}"


def test_chinese_keywords_find_chinese_text(stores):
    edge, _ = stores
    (hits,) = edge.search([SpaceQuery("text", query_vector("汽车"), using=SPARSE, limit=3)])
    assert hits[0].payload["content_hash"] == "t2"
    (hits,) = edge.search([SpaceQuery("text", query_vector("预算"), using=SPARSE, limit=3)])
    assert hits[0].payload["content_hash"] == "t3"


def test_counts_filters_and_deletes_agree(stores):
    for store in stores:
        assert store.count("clip") == 60 and store.count("clip", ["text"]) == 0
        assert store.count("text", ["text"]) == len(DOCS)
        store.delete_contents(["h3", "t2"])
        assert store.count("clip") == 59 and store.count("text") == len(DOCS) - 1
        ids = sorted(h.id for h in store.scroll("clip"))[:2]
        store.delete_points({"clip": ids, "text": []})
        assert store.count("clip") == 57 and not {h.id for h in store.scroll("clip")} & set(ids)
        assert store.spaces() == {"clip": 16, "text": 8}


def test_stored_vectors_are_the_normalised_input(stores, tmp_path):
    edge, client = stores
    rng = np.random.default_rng(7)
    clip, _ = _fill(EdgeStore(tmp_path / "again"), rng)
    ids = [p.id for p in clip[:5]]
    for store in stores:
        got = store.vectors("clip", ids)
        for p in clip[:5]:
            want = np.asarray(p.dense) / np.linalg.norm(p.dense)
            assert np.allclose(got[p.id], want, atol=1e-6)


def test_dimension_change_is_refused(stores):
    from msearch.errors import ConfigError

    for store in stores:
        with pytest.raises(ConfigError, match="dimensions"):
            store.ensure_space("clip", 32)


def test_edge_store_reopens_with_its_spaces(tmp_path):
    store = EdgeStore(tmp_path / "s")
    _fill(store, np.random.default_rng(1))
    store.close()
    again = EdgeStore(tmp_path / "s")
    assert again.spaces() == {"clip": 16, "text": 8} and again.count("clip") == 60
    again.close()


def test_the_embedded_store_builds_its_index_when_optimized(tmp_path):
    """qdrant-edge runs no optimizer by itself: until optimize(), queries scan unindexed segments."""
    rng = np.random.default_rng(5)
    store = EdgeStore(tmp_path / "big")
    try:
        store.ensure_space("clip", 512)
        data = rng.standard_normal((6000, 512)).astype(np.float32)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        for i in range(0, len(data), 1000):
            store.upsert("clip", [PointData(point_id(f"{j:032x}", 0, "clip", "m"), {"content_hash": f"{j:032x}",
                                                                                   "kind": "image"}, data[j].tolist())
                                  for j in range(i, i + 1000)])
        assert store._shards["clip"].info().indexed_vectors_count == 0
        store.optimize()
        assert store._shards["clip"].info().indexed_vectors_count >= len(data)  # the rebuilt shard
        (hits,) = store.search([SpaceQuery("clip", data[1234].tolist(), limit=3)])
        assert hits[0].payload["content_hash"] == f"{1234:032x}"
    finally:
        store.close()


def test_the_index_is_built_at_the_indexing_niceness(tmp_path):
    """The build's threads take every core: its process lowers its own CPU priority to the
    store's ``build_niceness`` (the settings' indexing niceness), so searches get the cores first."""
    import os
    import threading
    from pathlib import Path

    def builds() -> list[int]:  # the niceness of each build process of this one running now
        seen = []
        for entry in Path("/proc").iterdir():
            try:
                if b"msearch.store.index_build" not in (entry / "cmdline").read_bytes():
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                seen.append(int(fields[16]))
        return seen

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    want = min(19, mine + 6)
    if want == mine:
        pytest.skip("this process already runs at the lowest CPU priority")
    rng = np.random.default_rng(6)
    store = EdgeStore(tmp_path / "nice", build_niceness=want)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(builds())
            stop.wait(0.005)

    watching = threading.Thread(target=watch)
    try:
        store.ensure_space("clip", 512)
        data = rng.standard_normal((2500, 512)).astype(np.float32)
        store.upsert("clip", [PointData(point_id(f"{j:032x}", 0, "clip", "m"), {"content_hash": f"{j:032x}",
                                                                               "kind": "image"}, data[j].tolist())
                              for j in range(len(data))])
        watching.start()
        store.optimize()
    finally:
        stop.set()
        if watching.is_alive():
            watching.join()
        store.close()
    assert seen and max(seen) == want, (want, seen)
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the store's own process keeps its priority


def test_a_shard_with_little_to_index_is_optimized_without_a_process_or_a_copy(tmp_path, monkeypatch):
    """Under the indexing threshold the optimizer builds nothing: no build process is started."""
    import subprocess

    def no_process(*args, **kwargs):
        raise AssertionError("a build process was started for a shard with nothing to build")

    monkeypatch.setattr(subprocess, "run", no_process)
    store = EdgeStore(tmp_path / "small")
    try:
        store.ensure_space("clip", 64)
        store.upsert("clip", [PointData(point_id(f"h{j}", 0, "clip", "m"), {"content_hash": f"h{j}", "kind": "image"},
                                        np.full(64, j + 1.0, np.float32).tolist()) for j in range(200)])
        store.optimize()
        assert store.count("clip") == 200 and not list(tmp_path.glob("small/clip.*"))
    finally:
        store.close()


@pytest.mark.slow
def test_the_index_is_built_in_another_process_while_searches_go_on(tmp_path):
    """qdrant-edge holds Python's lock while it builds: the build runs on a copy in a process of
    its own, and searches are answered meanwhile; the rebuilt shard holds every point."""
    import threading
    import time

    store = EdgeStore(tmp_path / "vectors")
    store.ensure_space("clip", 512)
    vectors = np.random.default_rng(0).standard_normal((12_000, 512)).astype(np.float32)
    for i in range(0, len(vectors), 1000):
        store.upsert("clip", [PointData(point_id(f"h{j}", 0, "clip", "m"), {"content_hash": f"h{j}", "kind": "image"},
                                        vectors[j].tolist()) for j in range(i, i + 1000)])
    gaps, stop = [], threading.Event()

    def search():
        last = time.perf_counter()
        while not stop.is_set():
            store.search([SpaceQuery("clip", vectors[3].tolist(), limit=5)])
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
            time.sleep(0.02)

    searching = threading.Thread(target=search)
    searching.start()
    start = time.perf_counter()
    store.optimize()
    built = time.perf_counter() - start
    stop.set()
    searching.join()
    assert built > 1.0 and max(gaps) < min(1.0, built / 2), (built, max(gaps))
    assert store.count("clip") == 12_000 and not list(tmp_path.glob("vectors/clip.*"))
    hits = store.search([SpaceQuery("clip", vectors[3].tolist(), limit=1)])[0]
    assert hits[0].payload["content_hash"] == "h3"
    store.upsert("clip", [PointData(point_id("new", 0, "clip", "m"), {"content_hash": "new", "kind": "image"},
                                    vectors[0].tolist())])  # the rebuilt shard takes writes
    store.close()
    reopened = EdgeStore(tmp_path / "vectors")
    assert reopened.count("clip") == 12_001
    reopened.close()
