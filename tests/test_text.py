import pytest

from msearch.errors import BadInput
from msearch.media.text import chunk_text, decode_text, read_text


def test_gbk_is_decoded():
    original = "红色汽车在雨中缓缓行驶，司机打开了雨刷。预算会议推迟到下周一上午九点。"
    text, encoding = decode_text(original.encode("gbk"))
    assert text == original
    assert encoding.lower() in ("gb18030", "gbk", "gb2312")


def test_utf8_and_bom():
    assert decode_text("café".encode()) == ("café", "utf-8")
    assert decode_text(b"\xef\xbb\xbfcaf\xc3\xa9")[0] == "café"


def test_chunks_have_true_offsets_and_cover_the_text():
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(200))
    chunks = chunk_text(text, size=300, overlap=60)
    assert len(chunks) > 5
    for c in chunks:
        assert text[c.start:c.end] == c.text
        assert len(c.text) <= 300
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for a, b in zip(chunks, chunks[1:]):
        assert b.start < a.end, "consecutive chunks overlap"
        assert b.start > a.start


def test_chunks_break_on_sentences():
    text = "First sentence here. " * 40
    for c in chunk_text(text, size=200, overlap=40)[:-1]:
        assert c.text.endswith(".")


def test_chinese_without_spaces():
    text = "红色汽车在雨中行驶。" * 100
    chunks = chunk_text(text, size=120, overlap=20)
    assert all(text[c.start:c.end] == c.text for c in chunks)
    assert chunks[-1].end == len(text)


def test_whitespace_only_gives_no_chunks():
    assert chunk_text("  \n\n\t ", 100, 10) == []


def test_oversized_file_is_refused(tmp_path):
    p = tmp_path / "big.txt"
    p.write_text("x" * 1000)
    with pytest.raises(BadInput, match="over the limit"):
        read_text(p, max_bytes=100)
