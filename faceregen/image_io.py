"""Reading a user's photo safely: RGB uint8, upright, and bounded in size.

Photos come from anywhere (phones, scanners, e-mail), so every failure becomes one clear error naming
the file: a missing file (``FileNotFoundError``), a file that is not an image, a truncated or corrupt
image, or one with more than ``max_pixels`` pixels (``ValueError``). The size limit is checked from the
header before anything is decoded: Pillow's decompression-bomb guard runs with
``Image.MAX_IMAGE_PIXELS = max_pixels``, and its warning (``> max_pixels``) is an error here just as its
``DecompressionBombError`` (``> 2 max_pixels``) is. EXIF orientation is applied (phones store portraits sideways); images without
EXIF, such as the project's renders, come out exactly as ``np.asarray(Image.open(p).convert("RGB"))``.
High-bit-depth greyscale (16-bit PNG and TIFF: Pillow's modes ``I;16*`` and ``I``) is scaled to 8 bits
(:func:`rgb_array`); Pillow's own conversion clips it at 255, which turns most of a photo white.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default limit: 40 megapixels (a 7000 x 5700 photo); Pillow's own default is about 89 megapixels.
DEFAULT_MAX_PIXELS = 40_000_000

#: Pillow's modes of 16-bit greyscale images (PNG and TIFF decode to ``I;16*`` or ``I``).
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def rgb_array(image: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a decoded image: 16-bit greyscale ``v`` becomes ``round(v * 255 / 65535)``
    in all three channels; any other mode goes through Pillow's ``convert("RGB")`` (alpha dropped, palette
    and CMYK expanded). ValueError for greyscale values outside 0..65535 (not an 8- or 16-bit image)."""
    if image.mode not in WIDE_GREY_MODES:
        return np.asarray(image.convert("RGB"))
    grey = np.asarray(image).astype(np.int64)
    if grey.size and (grey.min() < 0 or grey.max() > 65535):
        raise ValueError(
            f"{image.mode} greyscale values in {grey.min()}..{grey.max()}, expected an 8- or 16-bit image (0..65535)"
        )
    grey8 = ((grey * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(grey8[..., None], 3, axis=2)


def read_rgb(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The image at ``path`` as RGB uint8 (H, W, 3), EXIF orientation applied, alpha dropped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``max_pixels`` is not positive; ``path`` is a folder, not an image, truncated or
            corrupt, or has more than ``max_pixels`` pixels (width x height).
    """
    path = Path(path)
    if max_pixels <= 0:
        raise ValueError(f"max_pixels={max_pixels}: expected a positive pixel count")
    if not path.exists():
        raise FileNotFoundError(f"{path}: image not found")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, expected an image file")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)
                rgb = rgb_array(upright)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"{path}: image too large, more than max_pixels={max_pixels} pixels ({err})") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image (Pillow cannot identify the format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: truncated or corrupt image ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    if rgb.size == 0:
        raise ValueError(f"{path}: empty image of size {rgb.shape[1]}x{rgb.shape[0]}")
    return rgb


def not_an_image(path: Path) -> str | None:
    """Why ``path`` is not an image Pillow reads (its header only is looked at), or None when it is one."""
    try:
        with Image.open(path):
            return None
    except UnidentifiedImageError:
        return "not an image (Pillow cannot identify the format)"
    except OSError as err:
        return f"not readable ({err})"


def image_files(path: str | os.PathLike) -> tuple[list[Path], list[tuple[Path, str]]]:
    """``([path], [])`` for a file (whatever it holds: :func:`read_rgb` names what is wrong); for a folder, its
    files at any depth in sorted order, split into the images (any format Pillow identifies) and the others,
    each with why it is skipped. FileNotFoundError when ``path`` does not exist, ValueError for a folder
    without images."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image or folder")
    if not path.is_dir():
        return [path], []
    images, skipped = [], []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        reason = not_an_image(file)
        if reason is None:
            images.append(file)
        else:
            skipped.append((file, reason))
    if not images:
        raise ValueError(f"{path}: folder holds no images Pillow reads ({len(skipped)} other file(s))")
    return images, skipped
