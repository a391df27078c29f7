"""Image data: decode a file safely, bring any pixel mode to RGB, resize to a square, normalize, augment.

The path of one image: `load_image` (file -> RGB `PIL.Image`) -> `Augment.apply` (training only, seeded)
-> `ImageTransform` (RGB image -> normalized float32 tensor (3, size, size)). `preprocess` runs them in
that order. Everything is Pillow + numpy + torch; no torchvision.

Conventions:
- Transparent pixels are composited over a WHITE background (documents, logos and icons are drawn on
  white; black would invert their look), never dropped.
- 16-bit greyscale ("I;16*" and "I") is scaled from 0..65535 to 0..255; float greyscale ("F") is read as
  0..1. Values outside those ranges are clipped.
- A JPEG's EXIF orientation is applied, so a phone photo is upright as its owner saw it.
"""
from __future__ import annotations

import io
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

import numpy as np
import torch

from ..extras import optional
from .text import DataError

Image = optional("PIL.Image")
ImageEnhance = optional("PIL.ImageEnhance")
ImageOps = optional("PIL.ImageOps")

MAX_PIXELS = 40_000_000  # width * height; a 40-megapixel photo decodes to 120 MB of RGB
MAX_FILE_BYTES = 50 * 2**20

RESIZE_MODES = ("crop", "pad", "stretch", "shortest_edge")
_EXIF_ORIENTATION = 0x0112
_WHITE = (255, 255, 255)

ImageSource = Union[str, Path, bytes, "Image.Image"]


class ImageError(DataError):
    """An image file is missing, unreadable, truncated, too large, or a decompression bomb."""


# --------------------------------------------------------------------------------------------- decoding

def load_image(path: ImageSource, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES,
               min_size: Optional[int] = None) -> Image.Image:
    """Decode an image file (PNG, JPEG, WebP, BMP, GIF: first frame, ...) into a loaded RGB image.

    The file size is checked before reading, and width * height from the header before any pixel is
    decoded. `min_size`: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (DCT scaling, much faster) as
    long as both sides stay >= min_size pixels; None decodes at full size. Also accepts raw `bytes` or
    an already open PIL image. The file is closed on return.
    """
    if isinstance(path, Image.Image):
        _check_pixels(path.size, max_pixels, _name_of(path))
        try:
            return _finish(path)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{_name_of(path)}: cannot decode image ({exc})") from None
    if isinstance(path, (bytes, bytearray, memoryview)):
        return load_image_bytes(bytes(path), "<bytes>", max_pixels, max_bytes, min_size)
    path = Path(path)
    if not path.exists():
        raise ImageError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageError(f"not an image file (a directory or device): {path}")
    n_bytes = path.stat().st_size
    if n_bytes > max_bytes:
        raise ImageError(f"{path}: file is {n_bytes:,} bytes, over the limit of {max_bytes:,} bytes")
    return _decode(path, str(path), max_pixels, min_size)


def load_image_bytes(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS,
                     max_bytes: int = MAX_FILE_BYTES, min_size: Optional[int] = None) -> Image.Image:
    """As `load_image`, from the bytes of an encoded file; `name` (a path, URL or tar member) is used in
    error messages."""
    if len(data) > max_bytes:
        raise ImageError(f"{name}: image is {len(data):,} bytes, over the limit of {max_bytes:,} bytes")
    return _decode(io.BytesIO(data), name, max_pixels, min_size)


def _decode(source: Union[Path, io.BytesIO], name: str, max_pixels: int, min_size: Optional[int]) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (does not raise) between MAX_IMAGE_PIXELS and twice that; a bomb is an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_pixels(img.size, max_pixels, name)
                if min_size is not None and img.format == "JPEG":
                    img.draft("RGB", (min_size, min_size))
                return _finish(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image, or a format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        # Truncated or corrupt data surfaces as any of these, depending on the format's decoder.
        raise ImageError(f"{name}: cannot decode image, truncated or corrupt ({exc})") from None


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageError(f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                         f"pixels (a possible decompression bomb; raise max_pixels if it is genuine)")


def _finish(img: Image.Image) -> Image.Image:
    """Load pixels, apply EXIF orientation, convert to RGB. Multi-frame files give their first frame."""
    img.load()
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    # Loaded pixels stay valid after the file is closed (closing only releases the file handle).
    return to_rgb(img)


def _name_of(img: Image.Image) -> str:
    return getattr(img, "filename", "") or "<image>"


# ------------------------------------------------------------------------------------------------ modes

def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB. Alpha (RGBA, LA, PA, P or L with a transparent colour) is
    composited over white. 16-bit greyscale is scaled 0..65535 -> 0..255 (not clipped at 255), float
    greyscale ("F") 0..1 -> 0..255. An RGB image is returned as is."""
    mode = img.mode
    transparent = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if mode == "RGB" and not transparent:
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(img), mode="L").convert("RGB")
    if transparent:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", img.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # 1, L, P, CMYK, YCbCr, HSV, RGBX, ...


def _high_depth_to_uint8(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    if img.mode == "F":
        scaled = a.astype(np.float32) * 255.0
    else:  # I;16, I;16B, I;16L, I;16N, I: 16-bit data (65535 / 255 = 257 exactly)
        scaled = a.astype(np.float32) / 257.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- transform

def image_to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """RGB image (H, W) -> float32 tensor (3, H, W) of (pixel / 255 - mean) / std per channel."""
    # numpy, single-threaded on purpose: torch's intra-op threads gain nothing on one image, and stall
    # when the other cores are busy (in a data loader they are).
    hwc = np.asarray(to_rgb(img))  # (H, W, 3) uint8
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
    inv_s = 1.0 / (np.asarray(std, dtype=np.float32).reshape(3, 1, 1) * 255.0)
    out = np.empty((3,) + hwc.shape[:2], dtype=np.float32)
    np.subtract(hwc.transpose(2, 0, 1), m, out=out)
    out *= inv_s
    return torch.from_numpy(out)


def tensor_to_image(t: torch.Tensor, mean: Sequence[float] = (0.5, 0.5, 0.5),
                    std: Sequence[float] = (0.5, 0.5, 0.5)) -> Image.Image:
    """Undo `image_to_tensor`: normalized (3, H, W) -> RGB image (values clipped to 0..255), for viewing."""
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"tensor_to_image expects a (3, H, W) tensor, got shape {tuple(t.shape)}")
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    x = (t.detach().float().cpu() * s + m).mul(255.0).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).numpy(), mode="RGB")


@dataclass
class ImageTransform:
    """RGB image -> normalized float32 tensor (3, size, size).

    resize: "crop" scales the shorter side to `size` and keeps the centre square (loses the ends of a
    long image); "pad" scales the longer side to `size` and letterboxes the rest with the `mean` colour,
    which normalizes to 0 (keeps the whole image); "stretch" scales each side to `size` (distorts shapes),
    as SigLIP's processor does; "shortest_edge" scales the shorter side to `resize_to` (default `size`),
    the longer one to int(resize_to * long / short), then cuts the centre `size` square out at whole pixels:
    CLIP's processor, pixel for pixel. Resampling is bicubic, antialiased when shrinking.

    draft: a large JPEG may be decoded at a reduced DCT scale first (`preprocess`; faster, pixels differ
    slightly); False decodes every file at full size, as Hugging Face's processors do.
    """
    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: Literal["crop", "pad", "stretch", "shortest_edge"] = "crop"
    resize_to: Optional[int] = None
    draft: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"ImageTransform.size must be a positive int, got {self.size!r}")
        if self.resize_to is not None and (self.resize != "shortest_edge" or not isinstance(self.resize_to, int)
                                           or self.resize_to < self.size):
            raise ValueError(f"ImageTransform.resize_to must be an int >= size ({self.size}) with resize "
                             f"shortest_edge, got {self.resize_to!r} with resize {self.resize!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"ImageTransform.resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"ImageTransform.mean and .std need 3 values (R, G, B), got {self.mean!r} "
                             f"and {self.std!r}")
        if min(self.std) <= 0:
            raise ValueError(f"ImageTransform.std must be > 0, got {self.std!r}")
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """(3, size, size) float32."""
        return image_to_tensor(self.resized(to_rgb(img)), self.mean, self.std)

    def resized(self, img: Image.Image) -> Image.Image:
        """The geometry step alone: image -> (size, size) image."""
        S = self.size
        w, h = img.size
        if self.resize == "stretch":
            return img.resize((S, S), Image.Resampling.BICUBIC)
        if self.resize == "shortest_edge":
            short = self.resize_to or S
            long = int(short * max(w, h) / min(w, h))
            nw, nh = (short, long) if w <= h else (long, short)
            left, top = (nw - S) // 2, (nh - S) // 2
            if nw * nh > MAX_PIXELS:  # a sliver scaled up: resample the kept square alone (the same sampling)
                sx, sy = w / nw, h / nh
                box = (left * sx, top * sy, (left + S) * sx, (top + S) * sy)
                return img.resize((S, S), Image.Resampling.BICUBIC, box=box)
            return img.resize((nw, nh), Image.Resampling.BICUBIC).crop((left, top, left + S, top + S))
        if self.resize == "crop":
            # Resizing only the centre square of the source equals resize-then-centre-crop, without
            # resampling pixels that would be thrown away.
            side = min(w, h)
            left, top = (w - side) / 2, (h - side) / 2
            return img.resize((S, S), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))
        scale = S / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        fill = tuple(int(round(m * 255)) for m in self.mean)
        canvas = Image.new("RGB", (S, S), fill)
        canvas.paste(img.resize((nw, nh), Image.Resampling.BICUBIC), ((S - nw) // 2, (S - nh) // 2))
        return canvas


# --------------------------------------------------------------------------------------------- augment

@dataclass
class Augment:
    """Seeded training augmentations on an RGB image, applied in this order: random resized crop,
    rotation, horizontal flip, brightness, contrast, saturation, hue. All off by default.

    random_crop_scale: (min, max) fraction of the image area kept; (1, 1) is off.
    random_crop_ratio: (min, max) aspect ratio (width / height) of the crop, drawn log-uniformly.
    hflip: mirror with probability 0.5. Off by default: a caption saying "left" would become wrong.
    rotate_degrees: angle drawn uniformly in [-d, d]; the corners are filled with mid-grey (127).
    brightness, contrast, saturation: factor drawn uniformly in [max(0, 1 - s), 1 + s].
    hue: shift drawn uniformly in [-hue, hue], in turns of the colour wheel (at most 0.5).
    """
    random_crop_scale: tuple[float, float] = (1.0, 1.0)
    random_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = False
    rotate_degrees: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def __post_init__(self) -> None:
        lo, hi = self.random_crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"Augment.random_crop_scale must satisfy 0 < min <= max <= 1, "
                             f"got {self.random_crop_scale!r}")
        rlo, rhi = self.random_crop_ratio
        if not 0 < rlo <= rhi:
            raise ValueError(f"Augment.random_crop_ratio must satisfy 0 < min <= max, got {self.random_crop_ratio!r}")
        for name in ("rotate_degrees", "brightness", "contrast", "saturation", "hue"):
            if getattr(self, name) < 0:
                raise ValueError(f"Augment.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.hue > 0.5:
            raise ValueError(f"Augment.hue must be <= 0.5 (half the colour wheel), got {self.hue!r}")

    @property
    def active(self) -> bool:
        """True when any augmentation is switched on."""
        return (tuple(self.random_crop_scale) != (1.0, 1.0) or self.hflip or self.rotate_degrees > 0
                or self.brightness > 0 or self.contrast > 0 or self.saturation > 0 or self.hue > 0)

    def apply(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """Augmented copy of an RGB image (its size may change through the crop). Every random draw comes
        from `rng`, so the same seed gives bit-identical output."""
        if tuple(self.random_crop_scale) != (1.0, 1.0):
            img = img.crop(self._crop_box(img.size, rng))
        if self.rotate_degrees > 0:
            angle = rng.uniform(-self.rotate_degrees, self.rotate_degrees)
            img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(127, 127, 127))
        if self.hflip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        for strength, enhancer in ((self.brightness, ImageEnhance.Brightness),
                                   (self.contrast, ImageEnhance.Contrast),
                                   (self.saturation, ImageEnhance.Color)):
            if strength > 0:
                img = enhancer(img).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
        if self.hue > 0:
            img = shift_hue(img, rng.uniform(-self.hue, self.hue))
        return img

    def _crop_box(self, size: tuple[int, int], rng: random.Random) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a crop covering a random area fraction and aspect ratio."""
        w, h = size
        log_lo, log_hi = math.log(self.random_crop_ratio[0]), math.log(self.random_crop_ratio[1])
        for _ in range(10):
            area = w * h * rng.uniform(*self.random_crop_scale)
            ratio = math.exp(rng.uniform(log_lo, log_hi))
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
                return left, top, left + cw, top + ch
        # No draw fitted (an extreme aspect ratio): the largest centred crop within the ratio bounds.
        ratio = min(max(w / h, self.random_crop_ratio[0]), self.random_crop_ratio[1])
        cw, ch = (w, round(w / ratio)) if w / h < ratio else (round(h * ratio), h)
        cw, ch = max(1, min(cw, w)), max(1, min(ch, h))
        left, top = (w - cw) // 2, (h - ch) // 2
        return left, top, left + cw, top + ch


def shift_hue(img: Image.Image, shift: float) -> Image.Image:
    """Rotate every pixel's hue by `shift` turns of the colour wheel (-0.5..0.5); greys are unchanged."""
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 255))) % 256
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


# ------------------------------------------------------------------------------------------- pipeline

def preprocess(img_or_path: ImageSource, transform: ImageTransform, augment: Optional[Augment] = None,
               rng: Optional[random.Random] = None) -> torch.Tensor:
    """Load (if a path or bytes) -> RGB -> augment (if given and active) -> transform: (3, size, size).

    A JPEG is decoded at the smallest DCT scale (1, 1/2, 1/4, 1/8) that keeps both sides >= `size`
    divided by the square root of the smallest random-crop area fraction: the resize shrinks it to `size`
    anyway, and even the tightest random crop keeps about `size` source pixels across. Training and
    evaluation decode the same way unless random cropping is on.
    """
    augmenting = augment is not None and augment.active
    if augmenting and rng is None:
        raise ValueError("preprocess: an active Augment needs rng=random.Random(seed) "
                         "(every augmentation is drawn from a seeded generator)")
    min_scale = augment.random_crop_scale[0] if augmenting else 1.0
    side = transform.resize_to or transform.size
    img = load_image(img_or_path, min_size=math.ceil(side / math.sqrt(min_scale)) if transform.draft else None)
    if augmenting:
        img = augment.apply(img, rng)
    return transform(img)


def stack_images(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Images (3, S, S) each -> batch (N, 3, S, S). All must have the same shape."""
    if len(tensors) == 0:
        raise ValueError("stack_images: no images to stack")
    first = tuple(tensors[0].shape)
    for i, t in enumerate(tensors):
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"stack_images: image {i} has shape {tuple(t.shape)}, expected (3, H, W)")
        if tuple(t.shape) != first:
            raise ValueError(f"stack_images: image {i} has shape {tuple(t.shape)} but image 0 has {first}; "
                             f"use one ImageTransform size for the whole batch")
    return torch.stack(list(tensors))
