"""A corpus of bad and unusual inputs, as found on plant network shares, with the behaviour each must get.

``make_bad_input_corpus(root)`` writes the files and returns one :class:`Case` per record a scan of ``root``
must produce; ``make_hostile_zip(path)`` writes a zip of traversal, link and junk members. Every image has
distinct pixels, so the only duplicates are the intended ones. Tests of later stages (encoding, export) can
import this module to feed them the same corpus.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
LONG_NAME = "long_" + "x" * 215 + ".png"  # 224 bytes: past 200, within the usual 255-byte limit
UNICODE_NAME = "défaut_裂纹.png"


@dataclass(frozen=True)
class Case:
    """One expected record (or zip member): ``expected_reason`` is a substring of the reason, None for any.

    Zip cases use the statuses "extracted" / "rejected"; ``extracted_as`` is where an extracted member lands.
    """

    name: str
    rel_path: str
    expected_status: str
    expected_reason: Optional[str]
    extracted_as: Optional[str] = None


def pattern(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """A small image whose pixels depend on ``seed``, so no two corpus images share bytes by accident."""
    width, height = size
    ramp = (np.add.outer(np.arange(height), np.arange(width)) * 7 + seed * 37) % 256
    rgb = np.stack([ramp, (ramp + 85) % 256, (ramp + 170) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb).convert(mode)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def two_colour(size: tuple[int, int], left: tuple, right: tuple) -> Image.Image:
    """Left half one colour, right half another: shows which way an image was turned or flipped."""
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of ``width``×``height`` zeros: ~50 KB on disk, gigabytes once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_bad_input_corpus(root: str | os.PathLike) -> list[Case]:
    """Write the corpus under ``root`` (created) and return the expected record of every entry a scan lists."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def put(rel: str, data: bytes, name: str, status: str = "ok", reason: Optional[str] = None) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        cases.append(Case(name, rel, status, reason))
        return path

    jpeg = encode(pattern((64, 48), 1), "JPEG", quality=90)
    png = encode(pattern((64, 48), 2), "PNG")
    corrupt = "truncated or corrupt image data"

    # Broken or not images at all.
    put("empty.jpg", b"", "zero-byte file", "skipped", "empty file")
    put("truncated.jpg", jpeg[: len(jpeg) // 2], "truncated JPEG", "skipped", corrupt)
    put("truncated.png", png[: len(png) // 2], "truncated PNG", "skipped", corrupt)
    put("png_header_only.png", png[:20], "PNG cut inside its header", "skipped", corrupt)
    put("notes.jpg", b"Line 3 inspection notes\nno image here\n", "text named .jpg", "skipped",
        "not an image (looks like text)")
    put("document.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF named .jpg", "skipped",
        "not an image (looks like PDF)")
    put("error_page.jpg", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>",
        "HTML error page saved as .jpg", "skipped", "not an image (looks like HTML)")
    put("drawing.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG named .png",
        "skipped", "not an image (looks like SVG drawing)")
    put("archive.jpg", b"PK\x03\x04" + bytes(40), "zip named .jpg", "skipped", "looks like zip or Office file")
    put("noise.png", bytes(range(7, 256)) * 4, "random bytes named .png", "skipped", "unrecognised content")
    put("phone.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "HEIC from a phone",
        "skipped", "unsupported image format (HEIC)")
    put("readme.txt", b"not a picture\n", "text file", "skipped", "not an image file")
    put("bomb.png", bomb_png(), "decompression bomb 20000x20000", "skipped",
        "image is 400 megapixels, above the 100-megapixel limit")

    # Unusual but valid: each must decode (checked pixel by pixel in test_image_decode).
    put("png_named.jpg", encode(pattern((30, 20), 3), "PNG"), "valid PNG named .jpg")
    put("jpeg_no_extension", encode(pattern((30, 20), 4), "JPEG"), "valid JPEG without extension")
    put("cmyk.jpg", encode(Image.new("CMYK", (32, 16), (0, 255, 255, 0)), "JPEG", quality=95), "CMYK JPEG")
    ramp16 = np.array([[0, 128 * 257, 65535, 1000]], dtype=np.uint16).repeat(4, axis=0)
    put("gray16.png", encode(Image.fromarray(ramp16), "PNG"), "16-bit grayscale PNG")
    put("gray16.tif", encode(Image.fromarray(ramp16[:, ::-1].copy()), "TIFF"), "16-bit TIFF")
    floats = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32).repeat(4, axis=0)
    put("float32.tif", encode(Image.fromarray(floats), "TIFF"), "float32 TIFF in [0, 1]")
    put("float32_wide.tif", encode(Image.fromarray(floats * 4000 - 1000), "TIFF"), "float32 TIFF, wide range")
    palette = Image.new("P", (4, 2), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.paste(1, (2, 0, 4, 2))
    put("palette_transparent.png", encode(palette, "PNG", transparency=0), "palette PNG with transparency")
    put("gray.jpg", encode(pattern((40, 30), 5, "L"), "JPEG"), "grayscale JPEG")
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (255, 0, 0, 128)])
    put("rgba.png", encode(rgba, "PNG"), "RGBA PNG")
    put("rgba_copy.png", encode(rgba, "PNG"), "duplicate by content", "duplicate", "same content as rgba.png")
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (0, 255)])
    put("la.png", encode(la, "PNG"), "grayscale + alpha PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    put("exif_rotated.jpg", encode(two_colour((40, 20), RED, BLUE), "JPEG", exif=exif.tobytes(), quality=95),
        "EXIF orientation 6")
    put("corrupt_exif.jpg", encode(pattern((24, 16), 6), "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff"),
        "JPEG with a malformed EXIF block")
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    put("animated.gif", encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "animated GIF")
    put("multipage.tif", encode(Image.new("RGB", (8, 8), GREEN), "TIFF", save_all=True,
                                append_images=[Image.new("RGB", (8, 8), BLUE)]), "multi-page TIFF")
    put("one_pixel.png", encode(Image.new("RGB", (1, 1), (12, 34, 56)), "PNG"), "1x1 pixel")
    put("image.webp", encode(pattern((32, 24), 7), "WEBP", lossless=True), "WebP")
    put("image.bmp", encode(pattern((32, 24), 8), "BMP"), "BMP")
    put("image.tiff", encode(pattern((32, 24), 9), "TIFF"), "plain TIFF")
    large = Image.linear_gradient("L").resize((4000, 3000)).convert("RGB")
    put("large_4000x3000.jpg", encode(large, "JPEG", quality=70), "huge but legal 4000x3000 JPEG")

    # Names and folders.
    put(UNICODE_NAME, encode(pattern((16, 16), 10), "PNG"), "unicode name")
    put("name with spaces.png", encode(pattern((16, 16), 11), "PNG"), "name with spaces")
    put(LONG_NAME, encode(pattern((16, 16), 12), "PNG"), "220+ character name")
    put("a/b/c/deep.png", encode(pattern((16, 16), 13), "PNG"), "nested 3 folders deep")
    put(".DS_Store", b"\x00\x00\x00\x01Bud1", ".DS_Store", "skipped", "hidden or system file")
    put("Thumbs.db", b"\xd0\xcf\x11\xe0" + bytes(60), "Thumbs.db", "skipped", "hidden or system file")
    put("desktop.ini", b"[.ShellClassInfo]\n", "desktop.ini", "skipped", "hidden or system file")
    put("._photo.jpg", b"\x00\x05\x16\x07" + bytes(60), "AppleDouble ._ file", "skipped", "hidden or system file")
    put(".secret.png", encode(pattern((16, 16), 14), "PNG"), "hidden valid image", "skipped",
        "hidden or system file")
    (root / "__MACOSX").mkdir()
    (root / "__MACOSX" / "._x.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    cases.append(Case("__MACOSX folder", "__MACOSX", "skipped", "hidden or system folder"))
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "t.png").write_bytes(encode(pattern((8, 8), 15), "PNG"))
    cases.append(Case("hidden folder", ".thumbnails", "skipped", "hidden or system folder"))

    # Links, permissions, special files (POSIX only).
    if hasattr(os, "symlink"):
        put("loop/inside.png", encode(pattern((16, 16), 16), "PNG"), "image beside a link loop")
        os.symlink("..", root / "loop" / "parent")
        cases.append(Case("symlink loop (folder link to its parent)", "loop/parent", "skipped",
                          "link to a folder (not followed)"))
        os.symlink("does_not_exist.png", root / "broken_link.png")
        cases.append(Case("broken symlink", "broken_link.png", "skipped", "broken link"))
        os.symlink("gray.jpg", root / "link_to_gray.jpg")
        cases.append(Case("symlink to an image", "link_to_gray.jpg", "duplicate", "same content as gray.jpg"))
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.png")  # opening a FIFO for reading would hang the scan
        cases.append(Case("named pipe with image name", "pipe.png", "skipped", "not a regular file"))
    if os.name == "posix":
        enforced = permissions_are_enforced(root)
        unreadable = put("unreadable.png", encode(pattern((16, 16), 17), "PNG"), "unreadable file (chmod 000)",
                         *(("skipped", "permission denied") if enforced else ("ok", None)))
        unreadable.chmod(0)
        locked = root / "locked_dir"
        locked.mkdir()
        (locked / "inside.png").write_bytes(encode(pattern((16, 16), 18), "PNG"))
        locked.chmod(0)
        cases.append(Case("unreadable folder (chmod 000)", "locked_dir", "skipped", "permission denied") if enforced
                     else Case("unreadable folder (chmod 000)", "locked_dir/inside.png", "ok", None))
    return cases


def permissions_are_enforced(folder: Path) -> bool:
    """False where chmod 000 does not stop reading (root, CAP_DAC_OVERRIDE): those cases then expect "ok"."""
    probe = folder / "permission_probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
        return False
    except PermissionError:
        return True
    finally:
        probe.unlink()


def make_empty_folder(root: str | os.PathLike) -> Path:
    path = Path(root) / "empty_folder"
    path.mkdir(parents=True)
    return path


def make_folder_without_images(root: str | os.PathLike) -> tuple[Path, int]:
    """A folder of 12 files none of which is a usable image; returns it and the file count."""
    path = Path(root) / "no_images"
    path.mkdir(parents=True)
    for index in range(4):
        (path / f"notes_{index}.txt").write_text("shift log\n")
        (path / f"scan_{index}.jpg").write_bytes(b"%PDF-1.4\n" + bytes([index]))
        (path / f"empty_{index}.png").write_bytes(b"")
    return path, 12


def make_hostile_zip(path: str | os.PathLike) -> list[Case]:
    """Write a zip with traversal, absolute, link, junk, bomb and legitimate members; return their cases."""
    cases: list[Case] = []
    good = encode(pattern((16, 16), 20), "PNG")

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        def add(member: str | zipfile.ZipInfo, data: bytes, name: str, status: str, reason: Optional[str] = None,
                extracted_as: Optional[str] = None) -> None:
            archive.writestr(member, data)
            member_name = member.filename if isinstance(member, zipfile.ZipInfo) else member
            cases.append(Case(name, member_name, status, reason, extracted_as))

        add("photos/line 1/ok.png", good, "normal nested member", "extracted", None, "photos/line 1/ok.png")
        add("photos/line 1/OK.png", good, "same name, other case", "rejected", "same name as another member")
        add("bad:name?.png", good, "name with Windows-invalid characters", "extracted", None, "bad_name_.png")
        add("CON.png", good, "Windows reserved device name", "extracted", None, "_CON.png")
        add("../evil.png", good, "zip slip ../", "rejected", "path leaves the folder")
        add("photos/../../evil2.png", good, "zip slip in the middle", "rejected", "path leaves the folder")
        add("..\\win.png", good, "zip slip with backslash", "rejected", "path leaves the folder")
        add("/abs/evil.png", good, "absolute path", "rejected", "absolute path")
        add("C:/drive.png", good, "drive letter", "rejected", "absolute path")
        link = zipfile.ZipInfo("photos/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        add(link, b"/etc/passwd", "symlink member", "rejected", "symbolic link")
        add("locked.png", good, "encrypted member (flag set afterwards)", "rejected", "encrypted")
        add("__MACOSX/photos/._ok.png", b"\x00\x05\x16\x07", "__MACOSX junk", "rejected", "hidden or system")
        add(".DS_Store", b"Bud1", ".DS_Store", "rejected", "hidden or system")
        add("zeros.bmp", bytes(8 * 1024 * 1024), "zip bomb member (ratio ~1000:1)", "rejected", "zip bomb")
    _mark_encrypted(path, "locked.png")
    return cases


def _mark_encrypted(path: str | os.PathLike, member: str) -> None:
    """Set the "encrypted" flag of ``member`` in its local and central headers (zipfile cannot encrypt)."""
    data = bytearray(Path(path).read_bytes())
    name = member.encode()
    for signature, flag_offset, name_offset in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = data.find(signature)
        while data[start + name_offset:start + name_offset + len(name)] != name:
            start = data.find(signature, start + 1)
        data[start + flag_offset] |= 0x1
    Path(path).write_bytes(bytes(data))
