"""The GPU image path (tac_core.embedding.device_decode), tested where it can be without a GPU: which device and
files take it, and that replaying the model's transform on decoded tensors (torchvision's CPU decoder standing in
for nvJPEG) gives PIL's model input within a level or two, and the same embeddings. bench/gpu_check.sh measures
it on a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from bad_inputs import encode, pattern
from tac_core.embedding import device_decode
from tac_core.embedding.device_decode import DecodedBatch, DeviceJpegDecoder
from tac_core.embedding.image_encoding import decode_min_side, encode_images
from tac_core.errors import InvalidInputError
from tac_core.inputs.image_decode import open_image_rgb

CPU = torch.device("cpu")


@pytest.fixture
def jpegs(textile_images, tmp_path):
    """The 12 real textile JPEGs (250×250) and a 1024×1024 JPEG made from one of them."""
    paths = sorted(textile_images.rglob("*.jpg"))
    big = tmp_path / "big.jpg"
    Image.open(paths[0]).convert("RGB").resize((1024, 1024), Image.BICUBIC).save(big, quality=90)
    return [*paths, big]


def test_only_cuda_takes_the_device_path_unless_forced(tiny_model, monkeypatch):
    monkeypatch.delenv(device_decode.ENV, raising=False)
    assert DeviceJpegDecoder.for_model(tiny_model.preprocess, CPU) is None  # on the CPU nothing changes
    monkeypatch.setenv(device_decode.ENV, "off")
    assert DeviceJpegDecoder.for_model(tiny_model.preprocess, torch.device("cuda")) is None
    monkeypatch.setenv(device_decode.ENV, "force")
    assert isinstance(DeviceJpegDecoder.for_model(tiny_model.preprocess, CPU), DeviceJpegDecoder)
    monkeypatch.setenv(device_decode.ENV, "sometimes")
    with pytest.raises(InvalidInputError, match="auto, off, force"):
        DeviceJpegDecoder.for_model(tiny_model.preprocess, CPU)


def test_transforms_with_steps_it_cannot_replay_keep_pil(tiny_model):
    decoder = DeviceJpegDecoder.from_transform(tiny_model.preprocess)
    assert [type(step).__name__ for step in decoder.steps] == ["Resize", "CenterCrop"]
    flipped = T.Compose([*tiny_model.preprocess.transforms[:2], T.RandomHorizontalFlip(), T.ToTensor()])
    assert DeviceJpegDecoder.from_transform(flipped) is None
    assert DeviceJpegDecoder.from_transform(lambda image: image) is None


def test_only_plain_complete_jpegs_are_read_for_the_device(tiny_model, jpegs, tmp_path):
    decoder = DeviceJpegDecoder.from_transform(tiny_model.preprocess)
    assert all(decoder.read(path) == path.read_bytes() for path in jpegs)
    picture = pattern((64, 48), 3)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: PIL turns it upright, nvJPEG would not
    cases = {"png": encode(picture, "PNG"), "cmyk": encode(picture.convert("CMYK"), "JPEG"),
             "rotated": encode(picture, "JPEG", exif=exif.tobytes()),
             "truncated": encode(picture, "JPEG")[:-200], "strip": encode(pattern((400, 40), 4), "JPEG"),
             "text": b"\xff\xd8\xff not a jpeg at all \xff\xd9"}
    for name, data in cases.items():
        (tmp_path / f"{name}.jpg").write_bytes(data)
        assert decoder.read(tmp_path / f"{name}.jpg") is None, name
    assert decoder.read(tmp_path / "missing.jpg") is None


def test_the_replayed_transform_gives_pils_model_input(jpegs, tiny_model):
    """The tiny model's transform (bicubic resize to 32, crop, normalise), and ViT-B-32's (to 224)."""
    from tac_core.embedding.models import ModelSpec, build_architecture

    vit, vit_preprocess = build_architecture(ModelSpec("ViT-B-32", "none"), "meta")
    for model, preprocess in ((tiny_model.model, tiny_model.preprocess), (vit, vit_preprocess)):
        decoder = DeviceJpegDecoder.from_transform(preprocess)
        min_side = decode_min_side(model, 256)
        on_tensors = decoder.transform(decoder.decode([path.read_bytes() for path in jpegs], CPU))
        with_pil = torch.stack([preprocess(open_image_rgb(path, min_side=min_side)) for path in jpegs])
        difference = (on_tensors - with_pil).abs()
        assert on_tensors.shape == with_pil.shape and on_tensors.dtype == torch.float32
        assert difference.max() < 0.08 and difference.mean() < 0.005  # a level is 1/255/std ≈ 0.015: ≤ 5 levels


def test_forced_device_path_embeds_like_pil_and_fails_with_the_same_reasons(tiny_model, jpegs, elpv_images, tmp_path,
                                                                            monkeypatch):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpegs[0].read_bytes()[:400])
    paths = [*jpegs, *sorted(elpv_images.glob("*.png"))[:4], broken]
    monkeypatch.setenv(device_decode.ENV, "off")
    with_pil = encode_images(tiny_model, paths, batch_size=8, num_workers=0, precision="fp32")
    decoded = []
    original = DeviceJpegDecoder.decode
    monkeypatch.setattr(DeviceJpegDecoder, "decode",
                        lambda self, datas, device: decoded.extend(datas) or original(self, datas, device))
    monkeypatch.setenv(device_decode.ENV, "force")
    on_device = encode_images(tiny_model, paths, batch_size=8, num_workers=2, precision="fp32")  # pickled to workers
    assert len(decoded) == len(jpegs)  # every plain JPEG, and nothing else, went to the device decoder
    assert on_device.failed == with_pil.failed and list(on_device.failed) == [len(paths) - 1]
    ok = with_pil.ok
    cosine = (on_device.embeddings[ok] * with_pil.embeddings[ok]).sum(axis=1)
    assert cosine.min() > 0.999
    np.testing.assert_array_equal(on_device.embeddings[len(jpegs):-1], with_pil.embeddings[len(jpegs):-1])  # PNGs


def test_a_jpeg_the_device_refuses_is_decoded_by_pil(tiny_model, jpegs):
    decoder = DeviceJpegDecoder.from_transform(tiny_model.preprocess)
    good, refused = jpegs[0].read_bytes(), b"\xff\xd8\xff\xe0" + bytes(64) + b"\xff\xd9"
    asked = []

    def fallback(position):
        asked.append(position)
        return tiny_model.preprocess(open_image_rgb(jpegs[1])), None

    batch = DecodedBatch([], None, [(9, "a reason")], [(0, good), (1, refused)])
    positions, images, failures = decoder.merge(batch, fallback, CPU)
    assert positions == [0, 1] and asked == [1] and failures == [(9, "a reason")]
    assert images.shape == (2, 3, 32, 32)
    torch.testing.assert_close(images[1], tiny_model.preprocess(open_image_rgb(jpegs[1])))
    assert decoder.merge(DecodedBatch([], None, [], [(3, refused)]), lambda p: (None, "why"), CPU) == ([], None,
                                                                                                     [(3, "why")])
