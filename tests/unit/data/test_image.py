import io
import random
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from omnigpt.data.image import (MAX_PIXELS, Augment, ImageError, ImageTransform, image_to_tensor, load_image,
                                load_image_bytes, preprocess, shift_hue, stack_images, tensor_to_image, to_rgb)
from omnigpt.data.text import DataError

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img).astype(int)


def quadrants(w: int = 8, h: int = 8) -> Image.Image:
    """Red, green / blue, white quadrants: exact colours that every lossless format keeps."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = RED
    a[: h // 2, w // 2:] = GREEN
    a[h // 2:, : w // 2] = BLUE
    a[h // 2:, w // 2:] = WHITE
    return Image.fromarray(a)


def noise_photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rs = np.random.RandomState(seed)
    return Image.fromarray(rs.randint(0, 256, (h, w, 3), dtype=np.uint8))


def png_claiming(path, width: int, height: int):
    """A 1x1 PNG whose header claims width x height: a decompression bomb that costs nothing to make."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature(8) + length + type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------------------------- formats

@pytest.mark.parametrize("ext,kw", [("png", {}), ("bmp", {}), ("webp", {"lossless": True})])
def test_lossless_formats_decode_exact_rgb(tmp_path, ext, kw):
    path = tmp_path / f"q.{ext}"
    quadrants().save(path, **kw)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (8, 8)
    assert np.array_equal(pixels(img), pixels(quadrants()))


def test_jpeg_decodes_close_to_source(tmp_path):
    path = tmp_path / "q.jpg"
    quadrants(32, 32).save(path, quality=95)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (32, 32)
    # Inside each flat quadrant, away from the edges where JPEG rings.
    assert np.abs(pixels(img)[4, 4] - RED).max() <= 8
    assert np.abs(pixels(img)[28, 28] - WHITE).max() <= 8


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (6, 6), RED), Image.new("RGB", (6, 6), BLUE), Image.new("RGB", (6, 6), GREEN)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    img = load_image(path)
    assert img.mode == "RGB"
    assert (pixels(img) == RED).all()


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    Image.new("RGB", (40, 20), RED).save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_bytes_and_open_image_inputs(tmp_path):
    buf = io.BytesIO()
    quadrants().save(buf, "PNG")
    assert np.array_equal(pixels(load_image_bytes(buf.getvalue(), "mem.png")), pixels(quadrants()))
    assert np.array_equal(pixels(load_image(buf.getvalue())), pixels(quadrants()))
    assert load_image(Image.new("L", (3, 2), 7)).mode == "RGB"


def test_16_bit_png_file_scales_to_8_bit(tmp_path):
    path = tmp_path / "depth.png"
    Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)).save(path)
    assert pixels(load_image(path))[0, :, 0].tolist() == [0, 128, 255]


def test_jpeg_draft_keeps_both_sides_at_least_min_size(tmp_path):
    path = tmp_path / "big.jpg"
    noise_photo(1000, 800).save(path)
    img = load_image(path, min_size=224)
    assert img.size == (500, 400)  # 800 // 224 = 3 allows 1/2 scale, not 1/4
    assert load_image(path).size == (1000, 800)


# ----------------------------------------------------------------------------------------------- modes

def test_l_and_1_modes():
    assert pixels(to_rgb(Image.new("L", (1, 1), 77)))[0, 0].tolist() == [77, 77, 77]
    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 1)
    assert pixels(to_rgb(one))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


@pytest.mark.parametrize("mode,opaque,clear", [("LA", (90, 255), (90, 0)),
                                               ("RGBA", (10, 20, 30, 255), (10, 20, 30, 0))])
def test_alpha_is_composited_over_white(mode, opaque, clear):
    expect_opaque = [opaque[0]] * 3 if mode == "LA" else list(opaque[:3])
    assert pixels(to_rgb(Image.new(mode, (1, 1), opaque)))[0, 0].tolist() == expect_opaque
    assert pixels(to_rgb(Image.new(mode, (1, 1), clear)))[0, 0].tolist() == [255, 255, 255]


def test_half_alpha_blends_halfway_to_white():
    got = pixels(to_rgb(Image.new("RGBA", (1, 1), (0, 100, 200, 128))))[0, 0]
    want = [c * 128 / 255 + 255 * 127 / 255 for c in (0, 100, 200)]
    assert np.abs(got - want).max() <= 1


def test_palette_with_and_without_transparency():
    p = Image.new("P", (3, 1))
    p.putpalette(list(RED) + list(GREEN) + list(BLUE) + [0] * 759)
    p.putpixel((1, 0), 1)
    p.putpixel((2, 0), 2)
    assert pixels(to_rgb(p))[0].tolist() == [list(RED), list(GREEN), list(BLUE)]
    p.info["transparency"] = 1
    assert pixels(to_rgb(p))[0].tolist() == [list(RED), list(WHITE), list(BLUE)]


def test_transparent_palette_png_file(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette(list(RED) + list(BLUE) + [0] * 762)
    p.putpixel((1, 0), 1)
    path = tmp_path / "t.png"
    p.save(path, transparency=0)
    assert pixels(load_image(path))[0].tolist() == [list(WHITE), list(BLUE)]


def test_16_bit_and_32_bit_integer_modes_scale_not_clip():
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    for img in (Image.fromarray(values), Image.fromarray(values.astype(np.int32))):
        assert img.mode in ("I;16", "I")
        assert pixels(to_rgb(img))[0, :, 1].tolist() == [0, 1, 128, 255]


def test_float_mode_reads_0_to_1():
    img = Image.fromarray(np.array([[0.0, 0.5, 1.0, 2.0]], np.float32))
    assert img.mode == "F"
    assert pixels(to_rgb(img))[0, :, 2].tolist() == [0, 128, 255, 255]


def test_cmyk_to_rgb_approximately():
    for cmyk, rgb in [((0, 255, 255, 0), RED), ((0, 0, 0, 0), WHITE), ((255, 0, 255, 0), GREEN)]:
        got = pixels(to_rgb(Image.new("CMYK", (1, 1), cmyk)))[0, 0]
        assert np.abs(got - rgb).max() <= 10


def test_rgb_is_returned_unchanged():
    img = quadrants()
    assert to_rgb(img) is img


# ---------------------------------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found.*nope.png"):
        load_image(tmp_path / "nope.png")
    assert issubclass(ImageError, DataError)


def test_header_over_pixel_limit_is_refused_before_decoding(tmp_path):
    path = png_claiming(tmp_path / "bomb.png", 8000, 8000)  # 64 M pixels: under Pillow's limit, over ours
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(path) in str(err.value) and f"{MAX_PIXELS:,}" in str(err.value)


@pytest.mark.parametrize("side", [10_000, 100_000])  # Pillow's warning range, then its error range
def test_pillow_decompression_bomb_becomes_image_error(tmp_path, side):
    path = png_claiming(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageError, match="decompression bomb") as err:
        load_image(path, max_pixels=10**12)
    assert str(path) in str(err.value)


def test_pixel_limit_is_inclusive(tmp_path):
    path = tmp_path / "q.png"
    Image.new("RGB", (100, 50)).save(path)
    assert load_image(path, max_pixels=5000).size == (100, 50)
    with pytest.raises(ImageError, match="100x50 = 5,000 pixels, over the limit of 4,999"):
        load_image(path, max_pixels=4999)


def test_file_size_limit(tmp_path):
    path = tmp_path / "q.png"
    noise_photo(64, 64).save(path)
    n = path.stat().st_size
    assert load_image(path, max_bytes=n).size == (64, 64)
    with pytest.raises(ImageError, match=f"q.png.*limit of {n - 1:,} bytes"):
        load_image(path, max_bytes=n - 1)
    with pytest.raises(ImageError, match="mem.png.*limit of 10 bytes"):
        load_image_bytes(path.read_bytes(), "mem.png", max_bytes=10)


def test_truncated_jpeg(tmp_path):
    whole = io.BytesIO()
    noise_photo(64, 64).save(whole, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg.*truncated"):
        load_image(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(random.Random(0).randbytes(500))
    with pytest.raises(ImageError, match="noise.png.*not an image"):
        load_image(path)
    with pytest.raises(ImageError, match="shard-3/x.jpg"):
        load_image_bytes(b"\xff\xd8\xff garbage", "shard-3/x.jpg")


# ------------------------------------------------------------------------------------------- transform

def test_transform_shape_dtype_and_normalized_value():
    out = ImageTransform(size=16)(Image.new("RGB", (40, 30), (128, 128, 128)))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((3, 16, 16), (128 / 255 - 0.5) / 0.5))


def test_transform_per_channel_mean_std():
    t = ImageTransform(size=4, mean=(0.0, 0.5, 1.0), std=(1.0, 0.5, 0.25))
    out = t(Image.new("RGB", (4, 4), (255, 255, 0)))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, 1.0, -4.0]))


def stripes() -> Image.Image:
    """200x100: green | red | blue | green, each 50 px wide."""
    a = np.zeros((100, 200, 3), np.uint8)
    a[:, :50] = GREEN
    a[:, 50:100] = RED
    a[:, 100:150] = BLUE
    a[:, 150:] = GREEN
    return Image.fromarray(a)


def unit(resize: str, **kw) -> torch.Tensor:
    """(H, W, 3) values in 0..1 of the transformed stripes."""
    return ImageTransform(size=32, mean=(0, 0, 0), std=(1, 1, 1), resize=resize, **kw)(stripes()).permute(1, 2, 0)


def close_to(px: torch.Tensor, rgb) -> bool:
    return bool((px - torch.tensor(rgb, dtype=torch.float32) / 255).abs().max() < 0.05)


def test_crop_keeps_the_centre_square():
    x = unit("crop")
    assert close_to(x[0, 1], RED) and close_to(x[31, 1], RED)
    assert close_to(x[16, 30], BLUE)
    # The green ends are cut off; only the bicubic kernel's reach leaves a faint fringe in the edge columns.
    assert x[:, 2:30, 1].max() < 0.01 and x[..., 1].max() < 0.1


def test_stretch_keeps_everything_and_fills_the_square():
    x = unit("stretch")
    assert close_to(x[0, 1], GREEN) and close_to(x[31, 1], GREEN)
    assert close_to(x[16, 12], RED) and close_to(x[16, 20], BLUE) and close_to(x[16, 30], GREEN)


def test_pad_letterboxes_with_the_mean_colour():
    x = ImageTransform(size=32, mean=(0.2, 0.4, 0.6), std=(1, 1, 1), resize="pad")(stripes())
    assert x[:, :8].abs().max() < 1e-6 and x[:, 24:].abs().max() < 1e-6  # pad rows normalize to 0
    img = x.permute(1, 2, 0) + torch.tensor([0.2, 0.4, 0.6])
    assert close_to(img[8, 1], GREEN) and close_to(img[23, 1], GREEN)  # 200x100 -> 32x16, rows 8..23
    assert close_to(img[16, 12], RED) and close_to(img[16, 20], BLUE)


def test_transform_validates_fields():
    with pytest.raises(ValueError, match="resize"):
        ImageTransform(resize="squash")
    with pytest.raises(ValueError, match="std"):
        ImageTransform(std=(0.5, 0.0, 0.5))


def test_tensor_to_image_inverts_normalization():
    img = noise_photo(12, 10)
    mean, std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    assert np.array_equal(pixels(tensor_to_image(image_to_tensor(img, mean, std), mean, std)), pixels(img))


def test_preprocess_path_matches_load_then_transform(tmp_path):
    path = tmp_path / "q.png"
    noise_photo(60, 40).save(path)
    t = ImageTransform(size=24)
    assert torch.equal(preprocess(path, t), t(load_image(path)))
    assert torch.equal(preprocess(Image.open(path), t), t(load_image(path)))


# --------------------------------------------------------------------------------------------- augment

FULL = Augment(random_crop_scale=(0.3, 1.0), hflip=True, rotate_degrees=15, brightness=0.4, contrast=0.4,
               saturation=0.4, hue=0.1)


def test_same_seed_same_output_different_seed_different():
    img, t = noise_photo(80, 60), ImageTransform(size=32)
    a = preprocess(img, t, FULL, random.Random(5))
    b = preprocess(img, t, FULL, random.Random(5))
    c = preprocess(img, t, FULL, random.Random(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_hflip_mirrors_about_half_the_time():
    img = quadrants()
    mirrored = pixels(img)[:, ::-1]
    flips = 0
    for seed in range(40):
        out = pixels(Augment(hflip=True).apply(img, random.Random(seed)))
        if np.array_equal(out, mirrored):
            flips += 1
        else:
            assert np.array_equal(out, pixels(img))
    assert 10 <= flips <= 30


def test_inactive_augment_is_identity():
    img, aug = noise_photo(20, 10), Augment()
    assert not aug.active and FULL.active and Augment(hue=0.01).active
    assert np.array_equal(pixels(aug.apply(img, random.Random(0))), pixels(img))
    t = ImageTransform(size=8)
    assert torch.equal(preprocess(img, t, aug), t(img))  # no rng needed when nothing is random


def test_active_augment_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        preprocess(noise_photo(8, 8), ImageTransform(size=8), Augment(hflip=True))


def test_random_crop_area_within_scale():
    img = noise_photo(100, 80)
    aug = Augment(random_crop_scale=(0.25, 0.5))
    for seed in range(20):
        w, h = aug.apply(img, random.Random(seed)).size
        assert 0.23 <= w * h / (100 * 80) <= 0.52
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_brightness_scales_pixels():
    img = Image.new("RGB", (4, 4), (100, 100, 100))
    values = {int(pixels(Augment(brightness=0.5).apply(img, random.Random(s)))[0, 0, 0]) for s in range(10)}
    assert len(values) > 1 and min(values) >= 50 and max(values) <= 150


def test_hue_shift_turns_red_green_and_keeps_grey():
    assert np.abs(pixels(shift_hue(Image.new("RGB", (1, 1), RED), 1 / 3))[0, 0] - GREEN).max() <= 8
    assert pixels(shift_hue(Image.new("RGB", (1, 1), (90, 90, 90)), 0.2))[0, 0].tolist() == [90, 90, 90]


def test_augment_validates_fields():
    with pytest.raises(ValueError, match="random_crop_scale"):
        Augment(random_crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="hue"):
        Augment(hue=0.7)


# ------------------------------------------------------------------------------------------------ batch

def test_stack_images():
    t = ImageTransform(size=8)
    batch = stack_images([t(quadrants()), t(noise_photo(9, 9))])
    assert batch.shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"image 1 has shape \(3, 16, 16\) but image 0 has \(3, 8, 8\)"):
        stack_images([t(quadrants()), ImageTransform(size=16)(quadrants())])
    with pytest.raises(ValueError, match="no images"):
        stack_images([])
