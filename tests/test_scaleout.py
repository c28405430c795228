"""The scale-out path (``MSEARCH_QDRANT_URL``): write tasks store the points themselves and hand
the owner only catalog rows; search replicas query Qdrant and ask the owner only for the files of
what they found. No Qdrant server runs here: qdrant-client's local mode stands in, shared by the
sink and the owner inside one process (local mode cannot be opened by two processes)."""

from conftest import index_direct, make_settings
from msearch.embed.fake import FakeEmbedder
from msearch.library import Library
from msearch.search import SearchService

EMBEDDERS = {r: FakeEmbedder(r) for r in ("clip", "text")}
QUERIES = ["quarterly budget travel", "tomatoes in the sun", "红色汽车"]


class _Watched:
    """The library as the owner, counting the units that reach it with vectors."""

    def __init__(self, lib):
        self.lib, self.with_vectors, self.units = lib, 0, 0

    def write(self, units, stored=False):
        self.units += len(units)
        self.with_vectors += sum(1 for u in units if u.get("vector") is not None)
        return self.lib.write(units, stored)

    def __getattr__(self, name):
        return getattr(self.lib, name)


def _points(lib):
    return {space: sorted(h.id for h in lib.vectors.scroll(space)) for space in lib.spaces()}


def test_write_tasks_store_vectors_and_the_owner_only_records(tmp_path, corpus):
    embedded = Library(make_settings(tmp_path / "edge", models={"clip": "fake", "text": "fake"}))
    server = Library(make_settings(tmp_path / "server", models={"clip": "fake", "text": "fake"}, qdrant_url=":memory:"))
    try:
        index_direct(embedded, embedded.settings, [corpus], EMBEDDERS)
        watched = _Watched(server)
        report = index_direct(watched, server.settings, [corpus], EMBEDDERS)
        assert len(report["indexed"]) == 9 and watched.units > 0 and watched.with_vectors == 0
        assert server.verify()["ok"] and _points(server) == _points(embedded)

        from serve.app import _StoreForSearch

        replica = _StoreForSearch(server, vectors=server.vectors)  # Qdrant directly, files from the owner
        assert replica.spaces() == server.spaces()
        for query in QUERIES:
            direct = SearchService(EMBEDDERS, replica, server.settings).search_text(query)
            assert direct == SearchService(EMBEDDERS, server, server.settings).search_text(query)
            assert [r["path"] for r in direct] == \
                [r["path"] for r in SearchService(EMBEDDERS, embedded, embedded.settings).search_text(query)]
    finally:
        embedded.close()
        server.close()


def test_points_of_a_content_no_longer_indexed_are_removed(tmp_path, corpus):
    """A write task stored points, but the run that claimed the content is gone: the owner drops them."""
    lib = Library(make_settings(tmp_path / "server", models={"clip": "fake", "text": "fake"}, qdrant_url=":memory:"))
    try:
        index_direct(lib, lib.settings, [corpus], EMBEDDERS)
        before = _points(lib)
        from msearch.library.writer import to_points
        from msearch.store.vectors import PointData

        stray = {"content_hash": "f" * 32, "unit": 0, "space": "text", "model": "fake-text", "kind": "text",
                 "path": "/gone.txt", "run_id": "dead", "text": "stray"}
        (point,) = to_points([{**stray, "vector": [0.1] * 48}])[0]["text"]
        lib.vectors.upsert("text", [PointData(point.id, point.payload, point.dense)])
        assert lib.write([{**stray, "dim": 48}], stored=True) == 0
        assert _points(lib) == before and lib.verify()["ok"]
    finally:
        lib.close()
