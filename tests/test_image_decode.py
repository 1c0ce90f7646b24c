"""Decoding: every unusual-but-valid corpus file becomes the right 8-bit RGB image, every bad one a reason."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from bad_inputs import (BLUE, GREEN, LONG_NAME, RED, UNICODE_NAME, WHITE, bomb_png, encode, make_bad_input_corpus,
                        pattern)
from tac_core.errors import InvalidInputError
from tac_core.inputs.image_decode import (DEFAULT_MAX_PIXELS, ImageDecodeError, decode_rgb, file_error_reason,
                                          open_image_rgb, set_max_pixels, unidentified_reason)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode_corpus")
    return root, {case.rel_path: case for case in make_bad_input_corpus(root)}


@pytest.fixture
def process_limit():
    """Lets a test change the process-wide pixel limit and puts it back."""
    before = Image.MAX_IMAGE_PIXELS
    yield set_max_pixels
    Image.MAX_IMAGE_PIXELS = before


def pixels(root, rel_path) -> np.ndarray:
    image = open_image_rgb(root / rel_path)
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    return array.astype(int)


def grey_row(array: np.ndarray) -> list[int]:
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    return array[0, :, 0].tolist()


def test_process_settings_are_explicit():
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS == 100_000_000
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("rel_path, seed, size", [
    ("png_named.jpg", 3, (30, 20)),
    ("image.webp", 7, (32, 24)),
    ("image.bmp", 8, (32, 24)),
    ("image.tiff", 9, (32, 24)),
    (UNICODE_NAME, 10, (16, 16)),
    ("name with spaces.png", 11, (16, 16)),
    (LONG_NAME, 12, (16, 16)),
    ("a/b/c/deep.png", 13, (16, 16)),
])
def test_lossless_files_decode_to_their_exact_pixels(corpus, rel_path, seed, size):
    root, _ = corpus
    np.testing.assert_array_equal(pixels(root, rel_path), np.asarray(pattern(size, seed)))


def test_content_decides_not_the_extension(corpus):
    root, _ = corpus
    assert pixels(root, "jpeg_no_extension").shape == (20, 30, 3)


def test_cmyk_jpeg_keeps_its_colour(corpus):
    root, _ = corpus
    assert np.abs(pixels(root, "cmyk.jpg") - RED).max() <= 8


def test_16_bit_is_divided_by_257(corpus):
    root, _ = corpus
    assert grey_row(pixels(root, "gray16.png")) == [0, 128, 255, 4]
    assert grey_row(pixels(root, "gray16.tif")) == [4, 255, 128, 0]


def test_float_in_unit_range_is_scaled_and_other_floats_are_stretched(corpus):
    root, _ = corpus
    assert grey_row(pixels(root, "float32.tif")) == [0, 128, 255, 64]
    assert grey_row(pixels(root, "float32_wide.tif")) == [0, 128, 255, 64]


def test_transparency_is_composited_on_white(corpus):
    root, _ = corpus
    palette = pixels(root, "palette_transparent.png")
    assert (palette[:, :2] == WHITE).all() and (palette[:, 2:] == RED).all()
    rgba = pixels(root, "rgba.png")[0]
    assert rgba[0].tolist() == list(WHITE) and rgba[1].tolist() == list(BLUE)
    assert np.abs(rgba[2] - (255, 127, 127)).max() <= 1  # half-transparent red over white
    assert pixels(root, "la.png")[0].tolist() == [list(WHITE), [0, 0, 0]]


def test_grayscale_jpeg_becomes_three_equal_channels(corpus):
    root, _ = corpus
    grey_row(pixels(root, "gray.jpg"))


def test_exif_orientation_is_applied(corpus):
    root, _ = corpus
    upright = pixels(root, "exif_rotated.jpg")  # stored 40×20, left red / right blue, orientation 6
    assert upright.shape == (40, 20, 3)
    assert np.abs(upright[5, 10] - RED).max() <= 10 and np.abs(upright[35, 10] - BLUE).max() <= 10
    _, size = decode_rgb(root / "exif_rotated.jpg", reduced=True)
    assert size == (20, 40)


def test_malformed_exif_is_ignored(corpus):
    root, _ = corpus
    assert pixels(root, "corrupt_exif.jpg").shape == (16, 24, 3)


def test_first_frame_of_animation_and_multipage_tiff(corpus):
    root, _ = corpus
    assert np.abs(pixels(root, "animated.gif") - RED).max() <= 8
    assert (pixels(root, "multipage.tif") == GREEN).all()


def test_tiny_and_huge_legal_images(corpus):
    root, _ = corpus
    assert pixels(root, "one_pixel.png").tolist() == [[[12, 34, 56]]]
    assert pixels(root, "large_4000x3000.jpg").shape == (3000, 4000, 3)


def test_reduced_decode_reports_full_size_from_a_smaller_image(corpus):
    root, _ = corpus
    image, size = decode_rgb((root / "large_4000x3000.jpg").read_bytes(), reduced=True)
    assert size == (4000, 3000) and image.size == (500, 375)


def test_jpeg_decodes_reduced_but_never_below_min_side(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(path, quality=90)
    full, size = decode_rgb(path)
    reduced, reduced_size = decode_rgb(path, min_side=448)
    assert size == reduced_size == (2000, 1500) and full.size == (2000, 1500)
    assert min(reduced.size) >= 448 and reduced.size[0] < 2000  # 1/2 or 1/4 scale
    png = tmp_path / "photo.png"
    full.save(png)
    assert decode_rgb(png, min_side=448)[0].size == (2000, 1500)  # no reduced decoding for PNG


@pytest.mark.parametrize("rel_path", [
    "empty.jpg", "truncated.jpg", "truncated.png", "png_header_only.png", "notes.jpg", "document.jpg",
    "error_page.jpg", "drawing.png", "archive.jpg", "noise.png", "phone.heic", "bomb.png", "pipe.png",
])
def test_bad_files_raise_a_decode_error_with_the_scan_reason(corpus, rel_path):
    root, cases = corpus
    with pytest.raises(ImageDecodeError) as raised:
        open_image_rgb(root / rel_path)
    assert cases[rel_path].expected_reason in raised.value.reason
    assert str(raised.value) == f"{root / rel_path}: {raised.value.reason}"
    assert isinstance(raised.value, InvalidInputError)


def test_missing_file_and_old_one_argument_form():
    with pytest.raises(ImageDecodeError, match="file not found"):
        open_image_rgb("/no/such/file.png")
    assert str(ImageDecodeError("plain message")) == "plain message"
    assert file_error_reason(PermissionError(13, "Permission denied")) == "permission denied"
    assert file_error_reason(OSError(5, "Input/output error")) == "could not read file (input/output error)"


@pytest.mark.parametrize("pil_warning", ["error", "default", "ignore"])
def test_pixel_limit_holds_whatever_the_warning_filter(tmp_path, process_limit, pil_warning):
    """PIL only warns between the limit and twice the limit; the image must be refused either way."""
    process_limit(1_000_000)
    band, far = tmp_path / "band.png", tmp_path / "far.png"
    band.write_bytes(bomb_png(1200, 1000))
    far.write_bytes(bomb_png(3000, 1000))
    with warnings.catch_warnings(record=True):  # record: keep the "default" case's warning out of the log
        warnings.simplefilter(pil_warning, Image.DecompressionBombWarning)
        for path, megapixels in ((band, "1.2"), (far, "3")):
            with pytest.raises(ImageDecodeError) as raised:
                open_image_rgb(path)
            assert raised.value.reason == f"image is {megapixels} megapixels, above the 1-megapixel limit"


def test_per_call_limit_only_lowers_the_process_limit(tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(encode(pattern((300, 200), 1), "PNG"))
    with pytest.raises(ImageDecodeError, match="image is 0.06 megapixels, above the 0.05-megapixel limit"):
        open_image_rgb(path, max_pixels=50_000)
    assert open_image_rgb(path, max_pixels=10 * DEFAULT_MAX_PIXELS).size == (300, 200)


def test_unidentified_content_is_described():
    assert unidentified_reason(b"\xef\xbb\xbf  %PDF-1.4") == "not an image (looks like PDF)"
    assert unidentified_reason(b"\x00\x00\x00\x1cftypavif") == "unsupported image format (AVIF)"
    assert unidentified_reason(b"8BPS\x00\x01") == "unsupported image format (PSD)"
    assert unidentified_reason(b"BMW line 4 report") == "not an image (looks like text)"  # "BM" is not a BMP


def test_decode_from_bytes_needs_no_name(corpus):
    root, _ = corpus
    image, size = decode_rgb((root / "gray16.tif").read_bytes())
    assert image.mode == "RGB" and size == (4, 4)
