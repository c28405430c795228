"""Upgrades and damage: the data dir's format version, an older layout migrated on open, a newer
one refused; a damaged catalog or vector shard named with the way out, and repaired."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from conftest import index_direct, make_corpus, make_settings
from msearch.embed.fake import FakeEmbedder
from msearch.errors import ConfigError
from msearch.library import Library
from msearch.query import SearchOptions
from msearch.search import SearchService

EMBEDDERS = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}


@pytest.fixture
def indexed(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    settings = make_settings(tmp_path / "data", models={"clip": "fake", "text": "fake"})
    lib = Library(settings)
    index_direct(lib, settings, [corpus], EMBEDDERS)
    lib.close()
    return settings, corpus


def test_a_new_data_dir_records_its_format_and_a_newer_one_is_refused(indexed):
    settings, _ = indexed
    assert json.loads((settings.data_dir / "FORMAT").read_text()) == {"format": 2}
    (settings.data_dir / "FORMAT").write_text('{"format": 99}')
    with pytest.raises(ConfigError, match="newer msearch .*format 99.*upgrade msearch"):
        Library(settings)
    (settings.data_dir / "FORMAT").write_text("{not json")
    with pytest.raises(ConfigError, match="FORMAT is damaged"):
        Library(settings)


def test_an_older_data_dir_is_migrated_when_it_is_opened(indexed):
    import qdrant_edge as E

    from msearch.store.vectors import EdgeStore, SpaceQuery, Where

    settings, corpus = indexed
    # Make it a data dir of the version before: points without file fields, no warning column,
    # no record that fields were added, no FORMAT file.
    store = EdgeStore(settings.vectors_path)
    everything = E.Filter(must=[E.FieldCondition(key="kind", match=E.MatchAny(any=["image", "text", "video",
                                                                                  "audio", "page"]))])
    for shard in store._shards.values():
        shard.update(E.UpdateOperation.delete_payload_by_filter(everything, ["dirs", "mtime", "size", "duration_s"]))
    folder = Where(dirs=(str(corpus / "docs"),))
    assert store.search([SpaceQuery("text", [1.0] * 48, where=folder)]) == [[]]
    store.close()
    con = duckdb.connect(str(settings.catalog_path))
    con.execute("DROP INDEX files_hash; DROP INDEX files_path; ALTER TABLE files DROP COLUMN warning")
    con.execute("DELETE FROM meta WHERE key = 'points:file_fields'")
    con.close()
    (settings.data_dir / "FORMAT").unlink()

    lib = Library(settings)
    try:
        assert json.loads((settings.data_dir / "FORMAT").read_text()) == {"format": 2}
        assert lib.show(str(corpus / "docs" / "budget.md"))["warning"] is None  # the column is back
        service = SearchService(EMBEDDERS, lib, settings)
        found = service.text("budget", SearchOptions(filters={"path_prefix": str(corpus / "docs")}))["results"]
        assert found and all(r["path"].startswith(str(corpus / "docs")) for r in found)
    finally:
        lib.close()


def test_a_damaged_catalog_is_named_with_the_way_out(indexed):
    settings, _ = indexed
    path = settings.catalog_path
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    (settings.data_dir / "catalog.duckdb.wal").unlink(missing_ok=True)
    with pytest.raises(ConfigError) as e:
        Library(settings)
    assert str(path) in str(e.value) and "index your folders again" in str(e.value)


def test_a_damaged_vector_shard_is_named_set_aside_and_its_files_embedded_again(indexed):
    settings, corpus = indexed
    segments = settings.vectors_path / "clip" / "segments"
    for segment in segments.iterdir():
        (segment / "segment.json").unlink()
    lib = Library(settings)
    try:
        assert "clip" in lib.status()["damaged"] and "clip" not in lib.spaces()
        report = lib.verify()
        assert not report["ok"] and "verify --repair" in report["problems"][0]["problem"]
        service = SearchService(EMBEDDERS, lib, settings)
        assert service.search_text("budget", kinds=["text"])  # the other spaces still answer
        done = lib.repair()
        assert done["set_aside"][0].startswith(str(settings.vectors_path / "clip.damaged-"))
        pictures = {str(p) for p in (corpus / "photos").iterdir() if p.name != "misnamed.txt"} | \
            {str(corpus / "photos" / "misnamed.txt")}
        assert set(done["reindex"]) == pictures
        assert {lib.show(p)["status"] for p in done["reindex"]} == {"pending"}
        index_direct(lib, settings, [corpus], EMBEDDERS)
        assert lib.verify()["ok"] and lib.status()["damaged"] == {}
        top = service.search_image((corpus / "photos" / "img2.jpg").read_bytes(), top_k=1)[0]
        assert top["path"] == str(corpus / "photos" / "img2.jpg")
    finally:
        lib.close()
    assert list(settings.vectors_path.glob("clip.damaged-*"))  # kept, for whoever wants to look
    shutil.rmtree(next(settings.vectors_path.glob("clip.damaged-*")))
