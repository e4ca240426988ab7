"""bench.text: the fixed split of the fortunes corpus, the brains it streams and the logistic
regression it compares them with (needs Debian's fortunes; the learning test also the [text] extra)."""

from __future__ import annotations

import numpy as np
import pytest

from bench import text
from bench.data import FORTUNES_DIR, fortunes
from models.encoders import missing_package

pytestmark = pytest.mark.skipif(not (FORTUNES_DIR / "computers").exists(),
                                reason="the Debian package fortunes is not installed (apt-get install fortunes)")
needs_encoder = pytest.mark.skipif(missing_package(text.ENCODER) is not None,
                                   reason=f"the encoder {text.ENCODER} needs the [text] extra")


def test_the_split_is_fixed_stratified_and_disjoint_and_the_small_stream_is_a_few_hundred_texts() -> None:
    texts, y = fortunes(text.TOPICS)
    x = np.zeros((len(y), 1), np.float32)  # the split depends on the labels only
    c = text.corpus(text.TOPICS, x=x, y=y)
    parts = [set(c.train.tolist()), set(c.val.tolist()), set(c.test.tolist())]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, parts)) == len(y)
    assert len({texts[i] for i in c.train} & {texts[i] for i in np.concatenate([c.val, c.test])}) == 0
    for label in range(len(text.TOPICS)):  # every topic in every split, about its share in test
        n = int((y == label).sum())
        assert abs(int((y[c.test] == label).sum()) - n * text.TEST_FRACTION) <= 1
        assert (y[c.val] == label).sum() > 0
    again = text.corpus(text.TOPICS, x=x, y=y)
    assert all(np.array_equal(a, b) for a, b in ((c.train, again.train), (c.val, again.val), (c.test, again.test)))
    small = c.stream("small")
    assert set(small.tolist()) <= parts[0]
    assert 200 <= len(small) <= 500
    assert np.bincount(y[small]).tolist() == [text.SMALL_PER_TOPIC] * len(text.TOPICS)


def test_logistic_regression_chooses_C_on_validation_never_on_test() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    x = rng.normal(size=(180, 5)) + np.eye(3, 5)[y] * 1.5
    train, val, test = np.arange(0, 180, 3), np.arange(1, 180, 3), np.arange(2, 180, 3)
    fit = text.fit_logistic(x, y, train, val, test, grid=(1e-4, 1.0, 1e4))
    assert fit.C == max(fit.val_by_C, key=lambda C: (fit.val_by_C[C], -C))
    assert fit.val == fit.val_by_C[fit.C] and fit.val > 0.6
    # Test labels that make another C best change nothing but the test score.
    y_bad = y.copy()
    y_bad[test] = (y[test] + 1) % 3
    other = text.fit_logistic(x, y_bad, train, val, test, grid=(1e-4, 1.0, 1e4))
    assert (other.C, other.val_by_C) == (fit.C, fit.val_by_C) and other.test < 0.4 < fit.test
    # Validation labels decide it: a tiny C (all-but-constant predictions) wins when val is one class.
    y_val = y.copy()
    y_val[val] = 0
    assert text.fit_logistic(x, y_val, train, val, test, grid=(1e-4, 1.0, 1e4)).C == 1e-4


@needs_encoder
def test_a_text_brain_learns_the_topics_above_chance_streamed_and_jointly() -> None:
    topics = text.TOPICS[:4]
    texts, y = fortunes(topics)
    keep = np.concatenate([np.flatnonzero(y == label)[:24] for label in range(len(topics))])
    from models.encoders import encode

    # Short texts and a small layer keep this quick; the benchmark runs the default brain.
    x = encode(text.ENCODER, [texts[i][:200] for i in keep], [1]).numpy()
    c = text.corpus(topics, x=x, y=y[keep])
    params = {"layers": [{"hidden": 256, "k": 64}]}
    streamed = text.run_brain(c, c.train, params, seed=0, joint=False)
    joint = text.run_brain(c, c.train, params, seed=0, joint=True)
    assert len(streamed.sleeps) == len(topics) // text.TASK_TOPICS and len(joint.sleeps) == 1
    assert streamed.test > 0.5 and joint.test > 0.5  # chance: 0.25
