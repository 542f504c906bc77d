"""Reading images (data/images.py): high-depth images are rescaled to 8 bits by their full range; folders and globs
name image files."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from adaptertune.data import ImageFiles, SplitView, find_images, open_rgb, read_images, to_rgb
from adaptertune.data.base import Unreadable
from adaptertune.errors import DataError

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, (12, 10), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy())


def png_16bit_rgb(path, rgb8: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one) holding ``rgb8 * 257``."""
    h, w, _ = rgb8.shape
    raw = b"".join(b"\x00" + (rgb8[y].astype(">u2") * 257).tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


def test_16_bit_png_equals_the_8_bit_image(tmp_path):
    Image.fromarray(GRAY8).save(tmp_path / "8.png")
    Image.fromarray(GRAY8.astype(np.uint16) * 257).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode == "I;16"
    a, b = to_tensor(open_rgb(tmp_path / "8.png")), to_tensor(open_rgb(tmp_path / "16.png"))
    assert a.shape == (12, 10, 3) and torch.equal(a, b)
    assert len(b.unique()) > 2  # not the black-and-white of Pillow's clipping convert


def test_16_bit_rgb_png_and_big_endian_tiff(tmp_path):
    Image.fromarray(RGB8).save(tmp_path / "8.png")
    png_16bit_rgb(tmp_path / "16rgb.png", RGB8)
    assert torch.equal(to_tensor(open_rgb(tmp_path / "8.png")), to_tensor(open_rgb(tmp_path / "16rgb.png")))
    big = Image.frombytes("I;16B", (10, 12), (GRAY8.astype(">u2") * 257).tobytes())
    big.save(tmp_path / "16b.tif")
    assert Image.open(tmp_path / "16b.tif").mode == "I;16B"
    gray_rgb = np.repeat(GRAY8[..., None], 3, axis=-1)
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "16b.tif")), gray_rgb)


def test_16_bit_values_are_rounded():
    a = np.array([[0, 128, 129, 65535, 257 * 100 + 128]], dtype=np.uint16)
    assert np.asarray(to_rgb(Image.fromarray(a)))[..., 0].tolist() == [[0, 0, 1, 255, 100]]


def test_32_bit_int_and_float_modes():
    i32 = Image.fromarray(GRAY8.astype(np.int32) * 257)
    f32 = Image.fromarray(GRAY8.astype(np.float32) / 255)
    assert (i32.mode, f32.mode) == ("I", "F")
    expected = np.repeat(GRAY8[..., None], 3, axis=-1)
    assert np.array_equal(np.asarray(to_rgb(i32)), expected)
    assert np.array_equal(np.asarray(to_rgb(f32)), expected)


@pytest.mark.parametrize(
    "array, match",
    [
        (
            np.full((4, 4), 70000, np.int32),
            r"Image 'x.tif' has mode 'I' with values 70000..70000; accepted: .*0..65535",
        ),
        (np.full((4, 4), -1, np.int32), r"mode 'I' with values -1..-1"),
        (
            np.full((4, 4), 2.5, np.float32),
            r"Image 'x.tif' has mode 'F' with values 2.5..2.5; accepted: float .*\[0, 1\]",
        ),
        (np.full((4, 4), np.nan, np.float32), r"mode 'F'"),
    ],
)
def test_out_of_range_high_depth_is_refused(array, match):
    with pytest.raises(DataError, match=match) as e:
        to_rgb(Image.fromarray(array), "'x.tif'")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode", ["1", "L", "P", "LA", "RGBA", "CMYK", "YCbCr"])
def test_8_bit_modes_become_rgb(mode):
    img = to_rgb(Image.fromarray(RGB8).convert(mode))
    assert img.mode == "RGB" and img.size == (10, 12)


def test_training_views_use_the_same_rescaling(tmp_path):
    Image.fromarray(GRAY8).save(tmp_path / "8.png")
    Image.fromarray(GRAY8.astype(np.uint16) * 257).save(tmp_path / "16.png")
    Image.fromarray(np.full((4, 4), 9.0, np.float32)).save(tmp_path / "bad.tif")
    src = ImageFiles([tmp_path / "8.png", tmp_path / "16.png", tmp_path / "bad.tif"], [0, 1, 0])
    view = SplitView(src, [0, 1, 2], transform=to_tensor)
    assert torch.equal(view[0][0], view[1][0])
    assert isinstance(view[2], Unreadable) and "mode 'F'" in view[2].reason  # refused: skipped like a corrupt file ...
    with pytest.raises(DataError, match=r"bad.tif has mode 'F'"):  # ... or an error with --strict
        SplitView(src, [2], transform=to_tensor, strict=True)[0]


def test_find_images_in_folders_and_globs(tmp_path):
    for rel in ("a/1.png", "a/sub/2.JPG", "b/3.png", "b/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert names(find_images([tmp_path / "a"])) == ["a/1.png", "a/sub/2.JPG"]
    assert names(find_images([str(tmp_path / "*" / "*.png")])) == ["a/1.png", "b/3.png"]
    assert names(find_images([str(tmp_path / "**" / "*.png"), tmp_path / "b" / "notes.txt"])) == [
        "a/1.png", "b/3.png", "b/notes.txt"]  # fmt: skip
    with pytest.raises(DataError, match=r"Cannot read image '.*nope.png': no such file"):
        find_images([tmp_path / "nope.png"])
    with pytest.raises(DataError, match=r"Pattern '.*\*.gif' matches no file"):
        find_images([str(tmp_path / "*.gif")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"Folder '.*empty' holds no image files"):
        find_images([tmp_path / "empty"])


def test_read_images_skips_unreadable_files(tmp_path):
    Image.fromarray(RGB8).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    got = read_images([tmp_path / "broken.png", tmp_path / "ok.png"], to_tensor)
    assert isinstance(got[0][1], str) and torch.equal(got[1][1], torch.from_numpy(RGB8))
    with pytest.raises(DataError, match=r"None of the 1 images could be read; '.*broken.png'"):
        read_images([tmp_path / "broken.png"], to_tensor)
