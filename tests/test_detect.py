import os

from conftest import write_image
from msearch.detect import sniff, sniff_file


def test_images_by_magic_not_suffix(tmp_path):
    png = write_image(tmp_path / "photo.txt", seed=1, fmt="PNG")
    jpg = write_image(tmp_path / "noext", seed=2, fmt="JPEG")
    assert sniff_file(png).kind == "image" and sniff_file(png).format == "png"
    assert sniff_file(jpg).format == "jpeg"


def test_media_signatures():
    assert sniff(b"%PDF-1.7\n...").kind == "page"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ").kind == "audio"
    assert sniff(b"\x00\x00\x00\x18ftypisom\x00\x00").kind == "video"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00").kind == "image"
    assert sniff(b"\x1a\x45\xdf\xa3\x01\x00").kind == "video"
    assert sniff(b"fLaC\x00\x00").kind == "audio"


def test_text_in_several_encodings():
    assert sniff("plain English text\n".encode()).kind == "text"
    assert sniff("红色汽车在雨中行驶，司机打开了雨刷。今天的预算会议推迟到周五。".encode("gbk"), ".txt").kind == "text"
    assert sniff("héllo wörld".encode("utf-16")).kind == "text"


def test_binary_and_empty_are_not_text():
    assert sniff(os.urandom(4096)).kind is None
    assert sniff(b"\x00\x01\x02\x03" * 100).kind is None
    assert sniff(b"").format == "empty"
