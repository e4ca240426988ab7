"""Image brains: base64 PNG/JPEG decoded by torchvision, raw pixels, and bad images refused."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.inputs import MAX_IMAGE_PIXELS

SMALL = {"layers": [{"hidden": 256, "k": 16}]}


def encode(pixels: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def corrupt_png() -> str:
    """A PNG whose compressed data is zeroed: the decoder of torchvision.io segfaults on it."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)).save(buf, format="PNG")
    raw = bytearray(buf.getvalue())
    raw[45:80] = bytes(35)
    return base64.b64encode(bytes(raw)).decode()


def stripes(vertical: bool, size: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.uint8)
    lines = np.arange(0, size, 4) + rng.integers(0, 2)
    if vertical:
        img[:, lines] = 255
    else:
        img[lines, :] = 255
    return img


@pytest.fixture
def brain(client: TestClient) -> str:
    r = client.post("/v1/brains", json={"name": "img", "input": {"kind": "image", "shape": [8, 8]}, "params": SMALL})
    assert r.status_code == 201, r.text
    assert r.json()["encoder"] == "pixels"
    return "img"


def test_learns_from_png_and_jpeg_and_raw_pixels(client: TestClient, brain: str) -> None:
    samples = [{"image": encode(stripes(v, seed=i), "PNG" if i % 2 else "JPEG"), "label": "v" if v else "h"}
               for i in range(20) for v in (True, False)]
    r = client.post(f"/v1/brains/{brain}/samples", params={"wait": True}, json={"task": "t", "samples": samples})
    assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text
    test = [{"image": encode(stripes(v, size=32, seed=100 + i))} for i in range(5) for v in (True, False)]
    out = client.post(f"/v1/brains/{brain}/predict", json={"inputs": test}).json()["predictions"]
    assert [p["label"] for p in out] == ["v", "h"] * 5  # resized from 32x32 to 8x8 and still right
    raw = (np.asarray(Image.fromarray(stripes(True)).resize((8, 8))) / 255.0).tolist()
    r = client.post(f"/v1/brains/{brain}/predict", json={"inputs": [{"x": raw}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "v"


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("not base64!!", "base64"),
        (base64.b64encode(b"hello world").decode(), "not a PNG or JPEG"),
        (encode(np.zeros((4, 4), np.uint8), "BMP"), "BMP"),
        (corrupt_png(), "corrupt"),
    ],
)
def test_bad_images_are_refused(client: TestClient, brain: str, image: str, reason: str) -> None:
    r = client.post(f"/v1/brains/{brain}/samples", json={"task": "t", "samples": [{"image": image, "label": 1}]})
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]


def test_oversized_image_refused_before_decoding(client: TestClient, brain: str) -> None:
    side = int(MAX_IMAGE_PIXELS ** 0.5) + 1
    big = encode(np.zeros((side, side), np.uint8))  # compresses to a few kB, decodes to > 16 MP
    r = client.post(f"/v1/brains/{brain}/predict", json={"inputs": [{"image": big}]})
    assert r.status_code == 422 and "exceeds the limit" in r.json()["detail"]


def test_image_brains_refuse_text_and_text_brains_take_one_string(client: TestClient, brain: str) -> None:
    r = client.post(f"/v1/brains/{brain}/predict", json={"inputs": [{"text": "a cat"}]})
    assert r.status_code == 422 and "'image'" in r.json()["detail"]
    r = client.post("/v1/brains", json={"name": "t", "input": {"kind": "text", "shape": [2]}})
    assert r.status_code == 422 and "text brain's shape is [1]" in r.json()["detail"]
