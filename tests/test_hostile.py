"""A folder of hostile names and files: each is recorded with a clear reason or indexed fine;
nothing else is affected."""

import os
from pathlib import Path

from conftest import index_direct, write_image

from msearch.embed.fake import FakeEmbedder
from msearch.library import Library


def test_hostile_names_and_files(fake_settings, tmp_path):
    root = tmp_path / "hostile"
    root.mkdir()
    (root / "名字 with spaces.txt").write_text("a note with a Chinese and spaced name\n")
    (root / ("long" * 60 + ".txt")).write_text("a note with a 244-character name\n")
    (root / os.fsdecode(b"bad-\xff\xfe-name.txt")).write_text("the name is not UTF-8\n")
    (root / "dangling.txt").symlink_to(root / "nowhere.txt")
    (root / "loop").mkdir()
    (root / "loop" / "up").symlink_to(root)  # a symlink loop: not followed
    (root / "folder.jpg").mkdir()  # a folder named like a picture
    (root / "folder.jpg" / "inside.txt").write_text("a note inside a folder named folder.jpg\n")
    (root / "zero.png").write_bytes(b"")
    write_image(root / "picture.txt", seed=1, fmt="PNG")  # the wrong suffix: content wins
    (root / "truncated.jpg").write_bytes(write_image(tmp_path / "whole.jpg", seed=2).read_bytes()[:300])
    # A decompression bomb: a PNG header that claims 40000 x 40000 pixels.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
                                    + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    embedders = {"clip": FakeEmbedder("clip"), "text": FakeEmbedder("text")}
    lib = Library(fake_settings)
    try:
        report = index_direct(lib, fake_settings, [root], embedders)
        indexed = sorted(Path(i["path"]).name for i in report["indexed"])
        failed = {Path(f["path"]).name: f["error"] for f in report["failed"]}
        skipped = {Path(f["path"]).name: f["error"] for f in report["skipped"]}
        assert indexed == sorted(["名字 with spaces.txt", "long" * 60 + ".txt", "inside.txt", "picture.txt"])
        assert "not valid UTF-8" in failed["bad-\\xff\\xfe-name.txt"]
        assert "cannot decode image" in failed["truncated.jpg"]
        assert "decompression bomb" in failed["bomb.png"] and "MSEARCH_IMAGE__MAX_PIXELS" in failed["bomb.png"]
        assert skipped == {"zero.png": "empty file"}
        assert lib.show(str(root / "picture.txt"))["kind"] == "image"
        assert lib.verify()["ok"]
        # Listed by status with their reasons, and the rest searchable.
        status = lib.status()
        assert {f["path"].rsplit("/", 1)[-1] for f in status["failed"]} == set(failed)
        from msearch.search import SearchService

        top = SearchService(embedders, lib, fake_settings).search_text("Chinese spaced name", kinds=["text"])[0]
        assert top["path"].endswith("名字 with spaces.txt")
    finally:
        lib.close()
