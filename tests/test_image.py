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


def _decoded_sizes(monkeypatch) -> list:
    """Sizes JPEG files report after ``draft`` chose their decode scale."""
    from PIL import JpegImagePlugin

    sizes, draft = [], JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        out = draft(self, mode, size)
        sizes.append(self.size)
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return sizes


def test_jpeg_decodes_at_reduced_scale_when_model_and_thumbnail_allow(monkeypatch):
    sizes = _decoded_sizes(monkeypatch)
    data = _encode(Image.new("RGB", (640, 480), (10, 20, 30)))
    prepared = prepare_image(data, max_pixels=10**8, embed_side=224, thumb_side=256)
    assert sizes == [(320, 240)]  # half scale still covers 224 (short) and 256 (long)
    assert (prepared.width, prepared.height) == (298, 224)  # the long side truncated, as CLIP processors do
    assert Image.open(io.BytesIO(prepared.thumbnail)).size == (256, 192)
    # A short side of 256 is not covered by 240: the whole picture is decoded.
    prepared = prepare_image(data, max_pixels=10**8, embed_side=256, thumb_side=256)
    assert sizes[-1] == (640, 480) and (prepared.width, prepared.height) == (341, 256)


def test_portrait_jpeg_and_a_model_smaller_than_the_thumbnail(monkeypatch):
    sizes = _decoded_sizes(monkeypatch)
    data = _encode(Image.new("RGB", (800, 1200), (200, 100, 0)))
    prepared = prepare_image(data, max_pixels=10**8, embed_side=32, thumb_side=256)
    assert sizes == [(200, 300)]  # a quarter covers the thumbnail's 256; an eighth (100x150) would not
    assert (prepared.width, prepared.height) == (32, 48)
    # The thumbnail comes from the decode, not from the model's tiny picture.
    assert Image.open(io.BytesIO(prepared.thumbnail)).size == (171, 256)


def test_embed_side_follows_the_clip_model(tmp_path, tiny_clip):
    import json

    from conftest import make_settings

    from msearch.embed.resolve import DEFAULT_IMAGE_SIDE, image_embed_side, image_input_side

    assert image_input_side(tiny_clip) == 32  # its processor's shortest_edge and crop
    for spec in ("fake", "none", str(tmp_path)):  # no processor config: the default CLIP's side
        assert image_input_side(spec) == DEFAULT_IMAGE_SIDE == 224
    folder = tmp_path / "siglip-like"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 384, "width": 384}}))
    assert image_input_side(str(folder)) == 384
    settings = make_settings(tmp_path / "data", models={"clip": tiny_clip})
    assert settings.image.embed_side == 0 and image_embed_side(settings) == 32
    assert image_embed_side(make_settings(tmp_path / "data", models={"clip": tiny_clip}, image={"embed_side": 300})) == 300
