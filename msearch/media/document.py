"""Documents: PDF pages (text layer and rendered image, page by page), office files and HTML.

PDFs stream: one page's text and image are in memory at a time, and the document is closed
and reopened every few dozen pages, because PDFium keeps every parsed page object until then.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from msearch.errors import BadInput, MissingDependency


@dataclass
class Page:
    number: int  # from 1, as a reader counts
    text: str
    chars: int  # characters in the text layer (0: a scanned page, or a blank one)
    width_pt: float
    height_pt: float
    _pdf_page: object = None

    def render(self, short_side: int):
        """The page as an RGB PIL image whose short side is ``short_side`` pixels."""
        scale = short_side / max(1.0, min(self.width_pt, self.height_pt))
        scale = min(scale, 8000 / max(1.0, self.width_pt, self.height_pt))  # bounded for odd page sizes
        bitmap = self._pdf_page.render(scale=scale)
        try:
            return bitmap.to_pil().convert("RGB")
        finally:
            bitmap.close()


def _pdfium():
    try:
        import pypdfium2 as pdfium
    except ImportError as e:
        raise MissingDependency("pypdfium2 is not installed: pip install pypdfium2") from e
    return pdfium


def _open(path: Path):
    pdfium = _pdfium()
    try:
        return pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as e:
        message = str(e)
        if "password" in message.lower():
            raise BadInput("encrypted PDF: it needs a password to open") from e
        raise BadInput(f"not a readable PDF ({message.replace('Failed to load document ', '')})") from e


def pdf_pages(path: Path, max_pages: int, reopen_every: int = 50, problems: list[str] | None = None) -> Iterator[Page]:
    """Pages in order; each page object is valid until the next one is yielded. A page that
    cannot be read is skipped and named in ``problems`` (without it, it fails the document)."""
    pdfium = _pdfium()
    pdf = _open(path)
    try:
        n = len(pdf)
        if n == 0:
            raise BadInput("the PDF has no pages")
        for i in range(min(n, max_pages)):
            if i and i % reopen_every == 0:
                pdf.close()
                pdf = _open(path)
            try:
                page = pdf[i]
            except pdfium.PdfiumError as e:
                if problems is None:
                    raise BadInput(f"page {i + 1} cannot be read ({e})") from e
                problems.append(f"page {i + 1} cannot be read ({e})")
                continue
            try:
                try:
                    textpage = page.get_textpage()
                    try:
                        chars = textpage.count_chars()
                        text = textpage.get_text_bounded() if chars else ""
                    finally:
                        textpage.close()
                    width, height = page.get_size()
                except pdfium.PdfiumError as e:
                    if problems is None:
                        raise BadInput(f"page {i + 1} cannot be read ({e})") from e
                    problems.append(f"page {i + 1} cannot be read ({e})")
                    continue
                yield Page(i + 1, text.replace("\r\n", "\n"), chars, width, height, page)
            finally:
                page.close()
    finally:
        pdf.close()


# -- office files --------------------------------------------------------------------------
def office_format(head: bytes) -> str | None:
    """docx or pptx, from the names in a zip file's first local headers."""
    if not head.startswith(b"PK\x03\x04"):
        return None
    if b"word/" in head:
        return "docx"
    if b"ppt/" in head:
        return "pptx"
    return None


# An office file is a zip: what its members expand to is checked before any is read.
MAX_UNZIPPED = 512 * 1024 * 1024
MAX_RATIO = 200  # expanded / compressed bytes of one member


def check_zip(path: Path) -> None:
    """Refuse an office file whose members would expand past :data:`MAX_UNZIPPED` or compress
    more than :data:`MAX_RATIO` to one (a zip bomb), from the sizes the zip declares."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise BadInput(f"not a readable office file (not a zip package: {e})") from e
    total = sum(m.file_size for m in members)
    if total > MAX_UNZIPPED:
        raise BadInput(f"refused as a possible zip bomb: its parts expand to {total // 2**20} MB "
                       f"(at most {MAX_UNZIPPED // 2**20} MB)")
    for m in members:
        if m.file_size > 1_000_000 and m.file_size > MAX_RATIO * max(1, m.compress_size):
            raise BadInput(f"refused as a possible zip bomb: {m.filename} expands {m.file_size // max(1, m.compress_size)}"
                           f" times ({m.file_size // 2**20} MB)")


def docx_text(path: Path) -> str:
    """Paragraphs and table cells in document order, then headers and footers."""
    check_zip(path)
    try:
        import docx
        from docx.table import Table
    except ImportError as e:
        raise MissingDependency("python-docx is not installed: pip install python-docx") from e
    try:
        return _docx_text(docx.Document(str(path)), Table)
    except Exception as e:  # python-docx fails in many ways on a malformed package
        raise BadInput(f"not a readable Word file ({type(e).__name__}: {e})") from e


def _docx_text(document, Table) -> str:
    parts = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            for row in block.rows:
                cells = [c.text.strip() for c in row.cells]
                parts.append("\t".join(dict.fromkeys(c for c in cells if c)))
        else:
            parts.append(block.text)
    for section in document.sections:
        for part in (section.header, section.footer):
            parts.extend(p.text for p in part.paragraphs)
    return "\n".join(p for p in parts if p and p.strip())


def pptx_slides(path: Path) -> list[str]:
    """The text of each slide (shapes, groups, tables, then the speaker notes)."""
    try:
        import pptx
    except ImportError as e:
        raise MissingDependency("python-pptx is not installed: pip install python-pptx") from e

    check_zip(path)

    def shape_text(shapes) -> Iterator[str]:
        for shape in shapes:
            if getattr(shape, "shape_type", None) is not None and hasattr(shape, "shapes"):
                yield from shape_text(shape.shapes)  # a group
            if getattr(shape, "has_text_frame", False):
                yield shape.text_frame.text
            if getattr(shape, "has_table", False):
                for row in shape.table.rows:
                    yield "\t".join(c.text for c in row.cells if c.text)

    try:
        slides = []
        for slide in pptx.Presentation(str(path)).slides:
            parts = list(shape_text(slide.shapes))
            if slide.has_notes_slide:
                parts.append(slide.notes_slide.notes_text_frame.text)
            slides.append("\n".join(p for p in parts if p and p.strip()))
        return slides
    except Exception as e:  # python-pptx fails in many ways on a malformed package
        raise BadInput(f"not a readable PowerPoint file ({type(e).__name__}: {e})") from e


# -- HTML ----------------------------------------------------------------------------------
_SKIP = {"script", "style", "noscript", "template", "svg", "head-meta"}
_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
          "header", "footer", "title", "table", "ul", "ol", "blockquote", "pre", "td", "th"}


class _Visible(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP or any(k == "hidden" for k, _ in attrs):
            if tag not in ("br", "img", "input", "meta", "link"):
                self._skip += 1
            return
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _SKIP and self._skip:
            self._skip -= 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def looks_like_html(text: str, suffix: str) -> bool:
    return suffix.lower() in (".html", ".htm", ".xhtml") or \
        bool(re.match(r"\s*(<!doctype html|<html)", text[:200], re.IGNORECASE))


def html_text(markup: str) -> str:
    """Visible text of an HTML document (no scripts, styles or hidden elements)."""
    parser = _Visible()
    parser.feed(markup)
    parser.close()
    text = html.unescape("".join(parser.parts))
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def render_page(path: Path, number: int, short_side: int, quality: int = 85) -> bytes:
    """Page ``number`` (from 1) of a PDF as a JPEG whose short side is ``short_side`` pixels."""
    import io

    pdfium = _pdfium()
    pdf = _open(path)
    try:
        if not 1 <= number <= len(pdf):
            raise BadInput(f"the PDF has {len(pdf)} pages; there is no page {number}")
        try:
            page = pdf[number - 1]
        except pdfium.PdfiumError as e:
            raise BadInput(f"page {number} cannot be read ({e})") from e
        try:
            width, height = page.get_size()
            image = Page(number, "", 0, width, height, page).render(short_side)
        except pdfium.PdfiumError as e:
            raise BadInput(f"page {number} cannot be rendered ({e})") from e
        finally:
            page.close()
    finally:
        pdf.close()
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
