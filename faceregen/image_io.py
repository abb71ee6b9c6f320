"""Reading a user's photo safely: RGB uint8, upright, and bounded in size.

Photos come from anywhere (phones, scanners, e-mail), so every failure becomes one clear error naming
the file: a missing file (``FileNotFoundError``), a file that is not an image, a truncated or corrupt
image, or one with more than ``max_pixels`` pixels (``ValueError``). The size limit is checked from the
header before anything is decoded: Pillow's decompression-bomb guard runs with
``Image.MAX_IMAGE_PIXELS = max_pixels``, and its warning (``> max_pixels``) is an error here just as its
``DecompressionBombError`` (``> 2 max_pixels``) is. EXIF orientation is applied (phones store portraits sideways); images without
EXIF, such as the project's renders, come out exactly as ``np.asarray(Image.open(p).convert("RGB"))``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default limit: 40 megapixels (a 7000 x 5700 photo); Pillow's own default is about 89 megapixels.
DEFAULT_MAX_PIXELS = 40_000_000

#: Suffixes taken from a folder of images (a file named explicitly is read whatever its suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
                rgb = np.asarray(upright.convert("RGB"))
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


def image_files(path: str | os.PathLike) -> list[Path]:
    """``[path]`` for a file (whatever its suffix); for a folder, its images (:data:`IMAGE_SUFFIXES`,
    any depth) in sorted order. FileNotFoundError when ``path`` does not exist, ValueError for a folder
    without images."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such image or folder")
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files
