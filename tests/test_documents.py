"""Documents and pages: PDF text layers and scans (OCR), office files and HTML, text in pictures,
late-interaction page search with a tiny ColQwen2, bad documents, bounded memory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, index_direct, make_pdf, make_settings, text_picture

from msearch.embed.fake import FakeEmbedder
from msearch.library import Library
from msearch.search import SearchService

PAGES = [
    "Annual report of the alpine railway\nThe banana harvest was late this year.",
    "Chapter two: wildlife\nA giraffe was seen near the northern station.",
    None,  # a scan: an image of text, no text layer
    "第四章 预算\n董事会批准了新的铁路预算。",
]


def scan_page():
    return text_picture(["Scanned invoice number 4711", "Total due: 99.50 EUR"], size=(1240, 1754), font_size=48)


@pytest.fixture
def documents(tmp_path):
    import docx
    import pptx

    root = tmp_path / "docs"
    make_pdf(root / "report.pdf", [p if p is not None else scan_page() for p in PAGES])
    d = docx.Document()
    d.add_heading("Quarterly memo", 1)
    d.add_paragraph("The lighthouse keeper ordered new lenses.")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "cell with a zebra"
    d.save(root / "memo.docx")
    deck = pptx.Presentation()
    for title, body in [("Kickoff", "agenda and goals"), ("Results", "the pelican project shipped")]:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(root / "deck.pptx")
    (root / "page.html").write_text("<html><head><title>Tides</title><script>var octopus = 1;</script></head>"
                                    "<body><p>Spring tides flood the old harbour.</p>"
                                    "<div hidden>walrus</div></body></html>")
    text_picture(["多模态搜索引擎", "Screenshot: ERROR disk quota exceeded"]).save(root / "screenshot.png")
    return root


def test_pages_office_files_html_and_pictures_are_found_by_their_words(tmp_path, documents):
    settings = make_settings(tmp_path / "data", models={"text": "fake", "ocr": "rapidocr"})
    embedders = {"text": FakeEmbedder("text")}
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [documents], embedders)
        names = sorted(Path(i["path"]).name for i in report["indexed"])
        assert names == ["deck.pptx", "memo.docx", "page.html", "report.pdf", "screenshot.png"], report
        service = SearchService(embedders, lib, settings)

        def top(query, **kw):
            return service.search_text(query, top_k=3, **kw)[0]

        for query, page in [("banana harvest", 1), ("giraffe", 2), ("invoice 4711", 3), ("铁路预算", 4)]:
            hit = top(query, kinds=["page"])
            assert hit["path"].endswith("report.pdf") and hit["kind"] == "page" and hit["page"] == page, (query, hit)
            assert hit["thumbnail"].startswith("/api/v1/thumbnails/")
        shown = lib.show(str(documents / "report.pdf"))
        assert shown["media"]["pages"] == 4 and shown["media"]["ocr_pages"] == 1
        assert top("lighthouse lenses")["path"].endswith("memo.docx")
        assert top("zebra")["path"].endswith("memo.docx")
        pelican = top("pelican project")
        assert pelican["path"].endswith("deck.pptx") and pelican["page"] == 2  # the slide number
        assert top("harbour tides")["path"].endswith("page.html")
        html_text = " ".join(u["text"] for u in lib.show(str(documents / "page.html"))["units"])
        assert "Spring tides" in html_text and "Tides" in html_text
        assert "octopus" not in html_text and "walrus" not in html_text  # scripts, hidden elements
        # Text in a picture, in both languages.
        for query in ("搜索引擎", "disk quota exceeded"):
            hit = top(query, kinds=["image"])
            assert hit["path"].endswith("screenshot.png") and hit["kind"] == "image", (query, hit)
        assert top("disk quota", kinds=["text"])["kind"] == "text"  # --kind text leaves pictures out
    finally:
        lib.close()


def test_bad_documents_are_recorded_and_harm_nothing(tmp_path):
    root = tmp_path / "bad"
    good = make_pdf(root / "good.pdf", ["a perfectly fine page about otters"])
    make_pdf(root / "locked.pdf", ["secret plans"], password="hunter2")
    (root / "corrupt.pdf").write_bytes(b"%PDF-1.7\n" + np.random.default_rng(3).bytes(4000))
    data = good.read_bytes()
    (root / "truncated.pdf").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(root / "broken.docx", "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<not really word")
    with zipfile.ZipFile(root / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as z:  # 64 MB of zeros in ~64 KB
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", b"\0" * (64 << 20))
    with zipfile.ZipFile(root / "bomb.pptx", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ppt/slides/slide1.xml", b" " * (64 << 20))
    text_picture([]).save(root / "blank.png")  # no text in it, and no CLIP model for pictures
    settings = make_settings(tmp_path / "data", models={"text": "fake", "ocr": "rapidocr"})
    embedders = {"text": FakeEmbedder("text")}
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], embedders)
        failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
        skipped = {Path(f["path"]).name: f["error"] for f in report["skipped"]}
        assert [Path(i["path"]).name for i in report["indexed"]] == ["good.pdf"]
        assert "encrypted" in failed["locked.pdf"] and "password" in failed["locked.pdf"]
        assert "not a readable PDF" in failed["corrupt.pdf"] and "not a readable PDF" in failed["truncated.pdf"]
        assert "Word" in failed["broken.docx"]
        assert "zip bomb" in failed["bomb.docx"] and "zip bomb" in failed["bomb.pptx"]
        assert "no text found" in skipped["blank.png"]
        hit = SearchService(embedders, lib, settings).search_text("otters", top_k=1)[0]
        assert hit["path"] == str(good) and hit["page"] == 1
    finally:
        lib.close()


def test_a_500_page_pdf_streams_in_bounded_memory(tmp_path):
    pages = [f"page {i} of the long manual\nsection {i % 7} paragraph about valves" for i in range(500)]
    path = make_pdf(tmp_path / "long.pdf", pages)
    script = (
        "import sys; from pathlib import Path; from msearch.media.document import pdf_pages\n"
        "n = 0\n"
        "for page in pdf_pages(Path(sys.argv[1]), 5000):\n"
        "    img = page.render(768); n += 1; assert page.text\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(n, int(hwm) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=600, check=True)
    n, peak_mb = map(int, out.stdout.split())
    assert n == 500
    assert peak_mb < 150, peak_mb  # one page at a time: rendering all 500 at once would be ~1.3 GB


def test_tiny_colqwen2_pages_are_the_models_output_and_ranked_as_colpali_does(tmp_path, tiny_colqwen2):
    import torch
    from colpali_engine.models import ColQwen2, ColQwen2Processor

    from msearch.embed import build_embedder
    from msearch.store.vectors import MULTI, SpaceQuery

    root = tmp_path / "pdfs"
    make_pdf(root / "a.pdf", ["first page about otters", "second page about rivers"])
    make_pdf(root / "b.pdf", [scan_page(), "a page on mountain goats"])
    settings = make_settings(tmp_path / "data", models={"colpali": tiny_colqwen2})
    colpali = build_embedder("colpali", settings)
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], {"colpali": colpali})
        assert len(report["indexed"]) == 2
        stored = sorted(lib.vectors.scroll("colpali"), key=lambda h: (h.payload["content_hash"], h.payload["page"]))
        assert len(stored) == 4
        multi = lib.vectors.vectors("colpali", [h.id for h in stored], using=MULTI)

        # Stored multi-vectors are the model's own output for the page images (float16 storage).
        from msearch.media.document import pdf_pages

        model, processor = ColQwen2.from_pretrained(tiny_colqwen2).eval(), ColQwen2Processor.from_pretrained(tiny_colqwen2)
        images = {}
        for name in ("a.pdf", "b.pdf"):
            for page in pdf_pages(root / name, 10):
                images[(lib.show(str(root / name))["content_hash"], page.number)] = page.render(settings.pages.render_side)
        for hit in stored:
            batch = processor.process_images([images[(hit.payload["content_hash"], hit.payload["page"])]])
            with torch.no_grad():
                want = model(**batch)[0][batch["attention_mask"][0].bool()].numpy()
            got = np.asarray(multi[hit.id], dtype=np.float32)
            assert got.shape == want.shape  # the page's own tokens only, no padding rows
            assert np.abs(got - want).max() < 2e-3

        # The store's two-stage MaxSim ranking equals colpali-engine's scorer on the same vectors.
        query = colpali.embed_texts(["otters by the river"])[0]
        hits = lib.vectors.search([SpaceQuery("colpali", query.tolist(), using=MULTI, limit=4,
                                              prefetch=query.mean(0).tolist(), prefetch_limit=100)])[0]
        scores = processor.score_multi_vector([torch.from_numpy(query)],
                                              [torch.tensor(multi[h.id], dtype=torch.float32) for h in stored])[0]
        want_order = [stored[i].id for i in np.argsort(-scores.numpy(), kind="stable")]
        assert [h.id for h in hits] == want_order
        for h in hits:
            assert h.score == pytest.approx(float(scores[[s.id for s in stored].index(h.id)]), abs=1e-3)

        # A page's own vectors as the query find that page first.
        for page in stored:
            rows = np.asarray(multi[page.id], dtype=np.float32)
            first = lib.vectors.search([SpaceQuery("colpali", rows.tolist(), using=MULTI, limit=1,
                                                   prefetch=rows.mean(0).tolist())])[0][0]
            assert first.id == page.id
        # And text queries run through the search service: a result per document, at its best
        # page, listing its matching pages as moments.
        results = SearchService({"colpali": colpali}, lib, settings).search_text("rivers", kinds=["page"], top_k=4)
        assert sorted(r["path"][-5:] for r in results) == ["a.pdf", "b.pdf"]
        assert all(sorted(m["page"] for m in r["moments"]) == [1, 2] and r["page"] == r["moments"][0]["page"]
                   for r in results)
    finally:
        lib.close()
        colpali.close()


def test_text_on_screen_in_a_video_is_found_at_its_scene(tmp_path):
    from conftest import ffmpeg

    root = tmp_path / "videos"
    root.mkdir()
    card = tmp_path / "card.png"
    text_picture(["Chapter three: the lighthouse"], size=(640, 360), font_size=36).save(card)
    video = root / "film.mp4"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25:duration=4", "-loop", "1", "-framerate", "25", "-t", "4",
                    "-i", str(card), "-filter_complex", "[0:v][1:v]concat=n=2:v=1[v]", "-map", "[v]",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video)],
                   check=True, timeout=120)
    settings = make_settings(tmp_path / "data", models={"text": "fake", "ocr": "rapidocr"})
    embedders = {"text": FakeEmbedder("text")}
    lib = Library(settings)
    try:
        report = index_direct(lib, settings, [root], embedders)
        assert [Path(i["path"]).name for i in report["indexed"]] == ["film.mp4"], report
        hit = SearchService(embedders, lib, settings).search_text("lighthouse chapter", kinds=["video"], top_k=1)[0]
        assert hit["path"] == str(video) and "lighthouse" in hit["text"].lower()
        assert hit["start_s"] == pytest.approx(4.0, abs=0.1) and hit["end_s"] == pytest.approx(8.0, abs=0.1)
        assert hit["thumbnail"]
    finally:
        lib.close()
