import io

import pytest
from PIL import Image

from msearch.errors import BadInput
from msearch.media.image import prepare_image

KW = dict(max_pixels=10_000_000, embed_side=64, thumb_side=32)


def _encode(img, fmt="JPEG", **save):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    prepared = prepare_image(_encode(img, exif=exif), **KW)
    assert prepared.height > prepared.width


def test_shrinks_to_model_size_and_makes_a_thumbnail():
    prepared = prepare_image(_encode(Image.new("RGB", (1200, 800), (0, 128, 0))), **KW)
    assert min(prepared.width, prepared.height) == 64
    assert (prepared.source_width, prepared.source_height) == (1200, 800)
    thumb = Image.open(io.BytesIO(prepared.thumbnail))
    assert thumb.format == "JPEG" and max(thumb.size) == 32
    assert len(prepared.rgb) == prepared.width * prepared.height * 3


def test_transparency_becomes_white():
    img = Image.new("RGBA", (50, 50), (255, 0, 0, 0))
    prepared = prepare_image(_encode(img, "PNG"), **KW)
    assert prepared.to_pil().getpixel((10, 10)) == (255, 255, 255)


def test_small_images_are_not_upscaled():
    prepared = prepare_image(_encode(Image.new("L", (20, 30), 7), "PNG"), **KW)
    assert (prepared.width, prepared.height) == (20, 30)


def test_pixel_bomb_is_refused_before_decoding():
    data = _encode(Image.new("RGB", (4000, 3000)), "PNG")
    with pytest.raises(BadInput, match="over the limit"):
        prepare_image(data, max_pixels=1_000_000, embed_side=64, thumb_side=32)


@pytest.mark.parametrize("data", [b"\xff\xd8\xff\xe0garbage", b"\x89PNG\r\n\x1a\n\x00\x00", b"not an image"])
def test_corrupt_images_raise_bad_input(data):
    with pytest.raises(BadInput, match="cannot decode image"):
        prepare_image(data, **KW)


def test_truncated_jpeg_is_refused():
    data = _encode(Image.new("RGB", (300, 300), (1, 2, 3)))
    with pytest.raises(BadInput):
        prepare_image(data[: len(data) // 3], **KW)
