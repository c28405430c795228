"""Images: one decode path for indexing and for query images.

EXIF orientation applied, RGB, a bounded pixel count, reduced to the size the model needs
(JPEG decodes at reduced scale through ``draft``, as far as the model's side and the
thumbnail's allow), plus a small JPEG thumbnail.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from msearch.errors import BadInput


@dataclass(frozen=True)
class PreparedImage:
    rgb: bytes  # raw RGB pixels of the model-sized image
    width: int
    height: int
    source_width: int
    source_height: int
    thumbnail: bytes  # JPEG

    def to_pil(self):
        return rgb_image(self.rgb, self.width, self.height)


def rgb_image(rgb: bytes, width: int, height: int):
    """A PIL image over raw RGB pixels (how decoded frames travel between stages)."""
    from PIL import Image

    return Image.frombytes("RGB", (int(width), int(height)), bytes(rgb))


def prepare_for(data: bytes, settings) -> PreparedImage:
    """:func:`prepare_image` with ``settings``' limits and its CLIP model's side."""
    from msearch.embed.resolve import image_embed_side

    img = settings.image
    return prepare_image(data, max_pixels=img.max_pixels, embed_side=image_embed_side(settings),
                         thumb_side=img.thumb_side)


def shrink_rgb(rgb: bytes, width: int, height: int, short_side: int) -> tuple[bytes, int, int]:
    """Raw RGB pixels (a video's keyframe) scaled as :func:`prepare_image` scales a picture for the
    model, so that a keyframe and the same frame uploaded as a query reach the model alike."""
    if min(width, height) <= short_side:
        return rgb, width, height
    img = _shrink(rgb_image(rgb, width, height), short_side)
    return img.tobytes(), img.width, img.height


def prepare_image(data: bytes, *, max_pixels: int, embed_side: int, thumb_side: int) -> PreparedImage:
    """Decode encoded image bytes into what the embedder and the thumbnail store need: the
    picture with its short side at most ``embed_side``, and a thumbnail whose long side is at
    most ``thumb_side``."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w <= 0 or h <= 0:
                raise BadInput("image has no pixels")
            if w * h > max_pixels:
                raise BadInput(
                    f"image of {w}x{h} pixels is over the limit of {max_pixels} (MSEARCH_IMAGE__MAX_PIXELS)"
                )
            if img.format == "JPEG":
                # A reduced-scale decode whose short side still covers the model's and whose long
                # side covers the thumbnail's (orientation is the same before EXIF's turn).
                short, long = max(1, embed_side), max(1, thumb_side)
                img.draft("RGB", (long, short) if w >= h else (short, long))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            small = _shrink(img, embed_side)
            # The thumbnail from the model's picture when that is large enough, else from the decode.
            thumb = (small if max(small.size) >= min(thumb_side, max(img.size)) else img).copy()
            thumb.thumbnail((thumb_side, thumb_side))
            img = small
            buf = io.BytesIO()
            thumb.save(buf, format="JPEG", quality=85)
    except BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadInput(f"image over the pixel limit, refused as a possible decompression bomb ({e}); "
                       f"MSEARCH_IMAGE__MAX_PIXELS is {max_pixels}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadInput(f"cannot decode image: {e}") from e
    return PreparedImage(img.tobytes(), img.width, img.height, w, h, buf.getvalue())


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img


def _shrink(img, short_side: int):
    from PIL import Image

    w, h = img.size
    short = min(w, h)
    if short <= short_side:
        return img
    # The long side as CLIP's image processors compute it (truncated), so that they find the
    # picture at their size already and leave it as it is.
    size = (short_side, int(short_side * h / w)) if w <= h else (int(short_side * w / h), short_side)
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def large_image(data: bytes, *, max_pixels: int, max_side: int):
    """The image as RGB PIL with its long side at most ``max_side`` (for reading text in it)."""
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    if img.size[0] * img.size[1] > max_pixels:
        raise BadInput(f"image of {img.size[0]}x{img.size[1]} pixels is over the limit of {max_pixels}")
    if img.format == "JPEG":
        img.draft("RGB", (max_side, max_side))
    img = _to_rgb(ImageOps.exif_transpose(img))
    img.thumbnail((max_side, max_side))
    return img
