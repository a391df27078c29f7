"""Images and audio clips of a request: `image_url` parts (a data: URL, or a file under the server's media
root) and `input_audio` parts (base64 WAV, FLAC or MP3), decoded with the same readers as training, under
the server's limits. Every problem is an `APIError` 400 that names the part."""
from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

import torch

from ..data.audio import AudioError, load_audio
from ..data.image import ImageError, load_image, load_image_bytes
from ..data.sources import outside
from ..extras import MissingExtraError
from .protocol import APIError

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.ASCII)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif", "image/bmp")


def _base64(text: str, param: str, max_bytes: int) -> bytes:
    if len(text) * 3 // 4 > max_bytes:
        raise APIError(413, f"{param}: {len(text) * 3 // 4:,} bytes is over the limit of {max_bytes:,}", param=param)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not valid base64", param=param) from None


def read_image(url: str, param: str, media_root: Optional[Path], max_pixels: int, max_bytes: int):
    """An image_url part's url -> a loaded RGB PIL image."""
    try:
        if url.startswith("data:"):
            head = _DATA_URL.match(url)
            if head is None or not head["b64"]:
                raise APIError(400, f"{param}: a data: URL must be data:image/TYPE;base64,...", param=param)
            if (head["mime"] or "").lower() not in IMAGE_TYPES:
                raise APIError(400, f"{param}: {head['mime'] or 'no media type'} is not an image type "
                                    f"({', '.join(IMAGE_TYPES)})", param=param)
            data = _base64(url[head.end():], param, max_bytes)
            return load_image_bytes(data, param, max_pixels=max_pixels, max_bytes=max_bytes)
        return load_image(_local_file(url, param, media_root), max_pixels=max_pixels, max_bytes=max_bytes)
    except ImageError as exc:
        raise APIError(400, str(exc), param=param) from None


def _local_file(url: str, param: str, media_root: Optional[Path]) -> Path:
    """A file path (or file:// URL) inside the media root; other URLs are not fetched."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        url = unquote(urlparse(url).path)
    elif scheme and len(scheme) > 1:  # a Windows drive letter is not a scheme
        raise APIError(400, f"{param}: {scheme}: URLs are not fetched by this server; send the image as a "
                            f"data: URL (base64)", param=param)
    if media_root is None:
        raise APIError(400, f"{param}: this server reads no local files (start it with --media-root DIR); "
                            f"send the image as a data: URL", param=param)
    path = Path(url) if Path(url).is_absolute() else media_root / url
    if outside(path, media_root):
        raise APIError(400, f"{param}: {url} is outside the server's media root", param=param)
    return path


def read_audio(data: str, fmt: str, param: str, sample_rate: int, max_seconds: float, max_bytes: int) -> torch.Tensor:
    """An input_audio part -> mono samples at the model's rate (samples,)."""
    try:
        return load_audio(_base64(data, param, max_bytes), sample_rate, max_seconds=max_seconds,
                          name=f"{param} ({fmt})")
    except (AudioError, MissingExtraError) as exc:
        raise APIError(400, str(exc), param=param) from None
