"""Tests of nucseg.data.images with fixtures generated under tmp_path."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from nucseg.data.images import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    read_image,
    read_label_map,
    write_image,
    write_label_map,
)
from nucseg.errors import AnnotationError, ImageReadError, NucsegError


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _png_rgb16(path, array):
    """Write a 16-bit RGB PNG by hand (Pillow cannot write one)."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[r].astype(">u2").tobytes() for r in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_suffix_constants():
    assert IMAGE_SUFFIXES == (".tif", ".tiff", ".png", ".jpg", ".jpeg")
    assert LABEL_SUFFIXES == (".png", ".tif", ".tiff", ".npy")


@pytest.mark.parametrize("compression", ["lzw", "packbits", "zlib", None])
@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
def test_read_tiff_compressions(tmp_path, rgb, compression, suffix):
    path = tmp_path / f"img{suffix}"
    tifffile.imwrite(path, rgb, photometric="rgb", compression=compression)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, rgb)


def test_read_planar_and_rgba_tiff(tmp_path, rgb):
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(planar), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, rgba, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(read_image(path), rgb)


def test_read_png_rgb_rgba_palette_jpeg(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    rgba = np.dstack([rgb, np.arange(24 * 32, dtype=np.uint8).reshape(24, 32)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    assert out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, rgb)
    Image.fromarray(rgb).quantize(8).save(tmp_path / "c.png")  # palette PNG
    assert read_image(tmp_path / "c.png").shape == (24, 32, 3)
    smooth = np.full((16, 16, 3), (200, 90, 150), np.uint8)
    for name in ("d.jpg", "e.JPEG"):
        Image.fromarray(smooth).save(tmp_path / name, quality=95)
        out = read_image(tmp_path / name)
        assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - smooth).max() <= 3


@pytest.mark.parametrize("kind", ["png2d", "png_la", "tif2d", "tif_gray_alpha"])
def test_grayscale_refused(tmp_path, kind):
    gray = np.zeros((8, 8), np.uint8)
    if kind == "png2d":
        path = tmp_path / "g.png"
        Image.fromarray(gray).save(path)
    elif kind == "png_la":
        path = tmp_path / "g.png"
        Image.fromarray(np.zeros((8, 8, 2), np.uint8), "LA").save(path)
    elif kind == "tif2d":
        path = tmp_path / "g.tif"
        tifffile.imwrite(path, gray)
    else:
        path = tmp_path / "g.tif"
        tifffile.imwrite(
            path,
            np.zeros((8, 8, 2), np.uint8),
            photometric="minisblack",
            extrasamples=["unassalpha"],
        )
    with pytest.raises(ImageReadError, match="grayscale") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_16bit_and_float_refused(tmp_path):
    path = tmp_path / "rgb16.png"
    _png_rgb16(path, np.full((4, 5, 3), 40000, np.uint16))
    with pytest.raises(ImageReadError, match="16-bit") as info:
        read_image(path)
    assert str(path) in str(info.value)
    gray16 = tmp_path / "gray16.png"
    Image.fromarray(np.full((4, 5), 1000, np.uint16)).save(gray16)
    with pytest.raises(ImageReadError, match=r"16-bit|grayscale"):
        read_image(gray16)
    tif16 = tmp_path / "rgb16.tif"
    tifffile.imwrite(tif16, np.zeros((4, 5, 3), np.uint16), photometric="rgb")
    with pytest.raises(ImageReadError, match="16-bit"):
        read_image(tif16)
    tiff_float = tmp_path / "f.tif"
    tifffile.imwrite(tiff_float, np.zeros((4, 5, 3), np.float32), photometric="rgb")
    with pytest.raises(ImageReadError, match="float32"):
        read_image(tiff_float)


def test_corrupt_missing_and_unsupported(tmp_path, rgb):
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(ImageReadError, match="corrupt") as info:
        read_image(junk)
    assert str(junk) in str(info.value)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, rgb, photometric="rgb", compression="lzw")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="cut.tif"):
        read_image(cut)
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="bad.png"):
        read_image(bad_png)
    with pytest.raises(ImageReadError, match="no such image"):
        read_image(tmp_path / "absent.png")
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(ImageReadError, match="unsupported"):
        read_image(tmp_path / "x.bmp")
    assert issubclass(ImageReadError, NucsegError)


@pytest.mark.parametrize("name", ["o.png", "o.tif", "sub/dir/o.tiff"])
def test_write_image_roundtrip(tmp_path, rgb, name):
    path = write_image(tmp_path / name, rgb)
    np.testing.assert_array_equal(read_image(path), rgb)


def test_write_image_rejects(tmp_path, rgb):
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "a.png", rgb.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "a.png", rgb[..., 0])
    with pytest.raises(ValueError, match="supports"):
        write_image(tmp_path / "a.bmp", rgb)


@pytest.mark.parametrize("name", ["l.png", "l.tif", "l.tiff", "l.npy"])
def test_label_roundtrip(tmp_path, name):
    labels = np.zeros((20, 30), np.int32)
    labels[2:6, 3:9] = 1
    labels[10:15, 10:20] = 65535 if name.endswith(".png") else 1_000_000
    path = write_label_map(tmp_path / name, labels)
    out = read_label_map(path)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, labels)


def test_label_formats_in(tmp_path):
    small = np.array([[0, 1], [2, 3]], np.uint8)
    Image.fromarray(small).save(tmp_path / "l8.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "l8.png"), small)
    np.save(tmp_path / "l64.npy", small.astype(np.int64)[..., None])
    np.testing.assert_array_equal(read_label_map(tmp_path / "l64.npy"), small)
    tifffile.imwrite(tmp_path / "l16.tif", small.astype(np.uint16))
    np.testing.assert_array_equal(read_label_map(tmp_path / "l16.tif"), small)


def test_label_write_rejects(tmp_path):
    big = np.array([[0, 70000]])
    with pytest.raises(ValueError, match="65535"):
        write_label_map(tmp_path / "a.png", big)
    write_label_map(tmp_path / "a.tif", big)  # TIFF holds int32
    with pytest.raises(ValueError, match="negative"):
        write_label_map(tmp_path / "a.npy", np.array([[0, -1]]))
    with pytest.raises(ValueError, match="integer"):
        write_label_map(tmp_path / "a.npy", np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="supports"):
        write_label_map(tmp_path / "a.jpg", np.zeros((2, 2), np.int32))


def test_label_read_rejects(tmp_path, rgb):
    cases = {
        "float.npy": lambda p: np.save(p, np.zeros((3, 3), np.float32)),
        "neg.npy": lambda p: np.save(p, -np.ones((3, 3), np.int32)),
        "cube.npy": lambda p: np.save(p, np.zeros((2, 3, 3), np.int32)),
        "rgb.png": lambda p: Image.fromarray(rgb).save(p),
        "junk.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n garbage"),
        "junk.tif": lambda p: p.write_bytes(b"II*\x00garbage"),
        "pickle.npy": lambda p: np.save(p, np.array([{"a": 1}], dtype=object)),
    }
    for name, make in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(AnnotationError) as info:
            read_label_map(path)
        assert str(path) in str(info.value), name
    with pytest.raises(AnnotationError, match="no such"):
        read_label_map(tmp_path / "absent.png")
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(AnnotationError, match="unsupported"):
        read_label_map(tmp_path / "a.jpg")


@pytest.mark.parametrize("name", ["map.png", "map.tif", "map.npy", "rgb.png", "rgb.tif"])
def test_a_failed_write_leaves_the_earlier_file_whole(tmp_path, monkeypatch, name):
    path = tmp_path / name
    rgb = name.startswith("rgb")
    data = np.full((8, 8, 3), 7, np.uint8) if rgb else np.arange(64, dtype=np.int32).reshape(8, 8)
    write = write_image if rgb else write_label_map
    write(path, data)
    before = path.read_bytes()

    def half_written(target):  # a writer that dies half-way, as on a full disk or a kill
        if hasattr(target, "write"):
            target.write(b"partial")
        else:
            Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", lambda target, *a, **k: half_written(target))
    monkeypatch.setattr(Image.Image, "save", lambda self, target, *a, **k: half_written(target))
    monkeypatch.setattr(np, "save", lambda target, *a, **k: half_written(target))
    with pytest.raises(OSError, match="disk full"):
        write(path, data)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left behind
