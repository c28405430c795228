"""Documents through the Ray Data pipeline: page text, OCR and page multi-vectors end to end."""

import pytest

from conftest import make_pdf, make_settings, text_picture

pytestmark = pytest.mark.slow  # Ray, servers or subprocesses: minutes


def test_pages_and_pictures_through_the_pipeline(ray_local, tmp_path):
    from msearch.embed.fake import FakeEmbedder
    from msearch.search import SearchService
    from pipelines.index import run_index
    from pipelines.owner import OwnerClient, get_owner, stop_owner

    root = tmp_path / "docs"
    scan = text_picture(["Scanned delivery note 5520"], size=(1240, 1754), font_size=48)
    pdf = make_pdf(root / "field-notes.pdf", ["Morning: a giraffe near the river", scan, "Evening: the camp fire"])
    text_picture(["Whiteboard: sprint goals"]).save(root / "whiteboard.png")
    settings = make_settings(tmp_path / "data", models={"text": "fake", "colpali": "fake", "ocr": "rapidocr"})
    try:
        summary = run_index(settings, [str(root)], progress=False)
        assert summary["indexed"] == 2 and not summary["failed"] and not summary["skipped"], summary
        store = OwnerClient(get_owner(settings, create=False))
        status = store.status()
        assert status["points"]["colpali"] == 3  # one multi-vector point per page
        assert store.show(str(pdf))["media"]["ocr_pages"] == 1
        # The fake page model sees pictures, not words: its ranking of pages is noise, and fused
        # with the text list it may put another page first. The text space alone finds the page.
        by_text = SearchService({"text": FakeEmbedder("text")}, store, settings)
        service = SearchService({"text": FakeEmbedder("text"), "colpali": FakeEmbedder("colpali")}, store, settings)
        for query, page in [("giraffe", 1), ("delivery note 5520", 2), ("camp fire", 3)]:
            hit = by_text.search_text(query, kinds=["page"], top_k=3)[0]
            assert hit["path"] == str(pdf) and hit["page"] == page, (query, hit)
            both = service.search_text(query, kinds=["page"], top_k=3)[0]
            assert both["path"] == str(pdf) and page in [m["page"] for m in both["moments"]], (query, both)
        board = service.search_text("sprint goals", kinds=["image"], top_k=1)[0]
        assert board["path"].endswith("whiteboard.png") and "sprint" in board["text"].lower()
    finally:
        stop_owner(settings)
