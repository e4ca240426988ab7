"""Property tests (Hypothesis) of the input validators: ``service.inputs`` and the request schemas.

Whatever a client sends, decoding either gives the right float32 matrix or raises the domain error
(``Invalid``, a 422 with a reason): never anything else, which the API would answer with a 500.
The schemas either validate or raise pydantic's ``ValidationError`` (the API's 422).
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pydantic import ValidationError

from service.errors import BrainError, Invalid
from service.inputs import MAX_TEXT_CHARS, check_limits, decode, decode_raw
from service.schemas import INPUT_FIELDS, EvaluateIn, InputIn, PredictIn, SampleIn, SamplesIn

# reproducible (a fixed seed per test), nothing written to a .hypothesis folder in the checkout
settings.register_profile("inputs", derandomize=True, database=None, deadline=None, max_examples=150,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = settings.get_profile("inputs")

F32_MAX = float(np.finfo(np.float32).max)
finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3)
json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
base64_text = st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode())
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=20)


def b64(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def decodes_or_invalid(items: list, kind: str, shape: list[int]) -> np.ndarray | list[str] | None:
    """``decode_raw``'s answer, or None when it raised ``Invalid``; any other exception fails the test."""
    try:
        out = decode_raw(items, kind, shape, field="inputs")
    except Invalid as exc:
        assert exc.status == 422 and exc.detail
        return None
    return out


def check_matrix(out: np.ndarray, n: int, shape: list[int]) -> None:
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (n, math.prod(shape))
    assert np.isfinite(out).all()


# -- vectors: x -----------------------------------------------------------------------------------
@PROFILE
@given(shape=shapes, data=st.data(), nested=st.booleans(), rows=st.integers(1, 4))
def test_finite_numbers_of_the_right_shape_decode_exactly(shape, data, nested, rows) -> None:
    arrs = [data.draw(arrays(np.float32, shape, elements=finite32)) for _ in range(rows)]
    items = [InputIn(x=(a.tolist() if nested else a.reshape(-1).tolist())) for a in arrs]
    out = decode_raw(items, "vector", shape, field="inputs")
    check_matrix(out, rows, shape)
    np.testing.assert_array_equal(out, np.stack([a.reshape(-1) for a in arrs]))


@PROFILE
@given(shape=shapes, data=st.data())
def test_integers_and_float64_values_become_float32(shape, data) -> None:
    dim = math.prod(shape)
    x = data.draw(st.lists(st.integers(-(2**24), 2**24) | st.floats(-1e30, 1e30), min_size=dim, max_size=dim))
    out = decode_raw([InputIn(x=x)], "vector", shape, field="inputs")
    np.testing.assert_array_equal(out[0], np.asarray(x, dtype=np.float32))


@PROFILE
@given(shape=shapes, data=st.data())
def test_a_wrong_number_of_values_is_invalid(shape, data) -> None:
    dim = math.prod(shape)
    n = data.draw(st.integers(0, 3 * dim + 2).filter(lambda k: k != dim))
    with pytest.raises(Invalid, match=r"expected shape|ragged"):
        decode_raw([InputIn(x=[0.5] * n)], "vector", shape, field="inputs")


@PROFILE
@given(shape=shapes, data=st.data(),
       bad=st.sampled_from([math.nan, math.inf, -math.inf, 1e39, -1e300, 10**40, F32_MAX * 2]))
def test_nan_infinity_and_values_too_large_for_float32_are_invalid(shape, data, bad) -> None:
    dim = math.prod(shape)
    x = data.draw(st.lists(finite32, min_size=dim, max_size=dim))
    x[data.draw(st.integers(0, dim - 1))] = bad
    good = [InputIn(x=[0.0] * dim)] * data.draw(st.integers(0, 2))  # the bad row need not be the first
    with pytest.raises(Invalid, match=r"inputs\[\d+\]\.x: values must") as info:
        decode_raw([*good, InputIn(x=x)], "vector", shape, field="inputs")
    assert f"inputs[{len(good)}]" in info.value.detail


@PROFILE
@given(shape=shapes, x=st.lists(json_values, max_size=12))
def test_anything_in_x_decodes_to_finite_float32_or_is_invalid(shape, x) -> None:
    out = decodes_or_invalid([InputIn(x=x)], "vector", shape)
    if out is not None:
        check_matrix(out, 1, shape)


@PROFILE
@given(x=st.lists(st.text(max_size=5) | st.none() | st.dictionaries(st.text(max_size=2), st.integers(), min_size=1),
                  min_size=4, max_size=4))
def test_non_numbers_are_invalid(x) -> None:
    assume(not all(isinstance(v, str) for v in x))  # numpy reads "1.5" as a number
    with pytest.raises(Invalid):
        decode_raw([InputIn(x=x)], "vector", [4], field="inputs")


@PROFILE
@given(depth=st.integers(1, 200))
def test_deep_nesting_is_invalid(depth) -> None:
    x: list = [1.0]
    for _ in range(depth):
        x = [x]
    assert decodes_or_invalid([InputIn(x=x)], "vector", [1]) is None or depth + 1 <= 32


# -- vectors: x_b64 -------------------------------------------------------------------------------
@PROFILE
@given(shape=shapes, data=st.data(), rows=st.integers(1, 4), mixed=st.booleans())
def test_base64_float32_decodes_exactly(shape, data, rows, mixed) -> None:
    arrs = [data.draw(arrays(np.float32, math.prod(shape), elements=finite32)) for _ in range(rows)]
    items = [InputIn(x=a.tolist()) if mixed and i % 2 else InputIn(x_b64=b64(a)) for i, a in enumerate(arrs)]
    out = decode_raw(items, "vector", shape, field="inputs")
    check_matrix(out, rows, shape)
    np.testing.assert_array_equal(out, np.stack(arrs))


@PROFILE
@given(shape=shapes, data=st.data())
def test_base64_of_the_wrong_length_or_not_finite_is_invalid(shape, data) -> None:
    dim = math.prod(shape)
    n = data.draw(st.integers(0, 2 * dim + 2).filter(lambda k: k != dim))
    with pytest.raises(Invalid, match="x_b64"):
        decode_raw([InputIn(x_b64=b64(np.zeros(n)))], "vector", shape, field="inputs")
    bad = np.zeros(dim, dtype=np.float32)
    bad[data.draw(st.integers(0, dim - 1))] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    with pytest.raises(Invalid, match="finite"):
        decode_raw([InputIn(x_b64=b64(bad))], "vector", shape, field="inputs")


@PROFILE
@given(shape=shapes, text=st.text(max_size=64) | base64_text)
def test_any_string_as_x_b64_decodes_or_is_invalid(shape, text) -> None:
    for items in ([InputIn(x_b64=text)], [InputIn(x_b64=text), InputIn(x_b64=b64(np.zeros(math.prod(shape))))]):
        out = decodes_or_invalid(items, "vector", shape)
        if out is not None:
            check_matrix(out, len(items), shape)
            assert base64.b64decode(text) == np.asarray(out[0], "<f4").tobytes()


# -- images ---------------------------------------------------------------------------------------
image_shapes = st.sampled_from([[8, 8], [1, 8, 8], [3, 8, 8], [3, 5, 7], [1, 1, 1]])


@st.composite
def pictures(draw) -> tuple[str, np.ndarray]:
    """A base64 PNG or JPEG of a random size and mode, and its pixels."""
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "1", "LA", "I;16"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    assume(not (fmt == "JPEG" and mode in ("RGBA", "P", "LA", "I;16")))
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, "RGB").convert(mode if mode != "I;16" else "I").convert(mode) \
        if mode != "I;16" else Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).convert("I;16")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode(), pixels


@PROFILE
@given(shape=image_shapes, picture=pictures())
def test_images_decode_to_pixels_in_0_1(shape, picture) -> None:
    data, _ = picture
    out = decode_raw([SampleIn(image=data, label=0)], "image", shape, field="samples")
    check_matrix(out, 1, shape)
    assert out.min() >= 0.0 and out.max() <= 1.0


@PROFILE
@given(seed=st.integers(0, 2**32 - 1))
def test_a_grey_png_of_the_brains_size_decodes_exactly(seed) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, format="PNG")
    out = decode_raw([InputIn(image=base64.b64encode(buf.getvalue()).decode())], "image", [1, 8, 8], field="inputs")
    np.testing.assert_allclose(out[0], pixels.reshape(-1) / 255.0, rtol=0, atol=1e-7)


@PROFILE
@given(shape=image_shapes, picture=pictures(), data=st.data())
def test_corrupt_images_are_invalid_or_decode(shape, picture, data) -> None:
    raw = bytearray(base64.b64decode(picture[0]))
    how = data.draw(st.sampled_from(["truncate", "flip", "splice"]))
    at = data.draw(st.integers(0, len(raw) - 1))
    if how == "truncate":
        raw = raw[:at]
    elif how == "flip":
        raw[at] ^= data.draw(st.integers(1, 255))
    else:
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    out = decodes_or_invalid([InputIn(image=base64.b64encode(bytes(raw)).decode())], "image", shape)
    if out is not None:
        check_matrix(out, 1, shape)


@PROFILE
@given(shape=image_shapes, text=st.text(max_size=40) | base64_text)
def test_any_string_as_an_image_is_invalid_or_decodes(shape, text) -> None:
    out = decodes_or_invalid([InputIn(image=text)], "image", shape)
    if out is not None:
        check_matrix(out, 1, shape)


@PROFILE
@given(shape=image_shapes, data=st.data())
def test_raw_pixels_of_the_brains_shape_pass_through(shape, data) -> None:
    pixels = data.draw(arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
    out = decode_raw([InputIn(x=pixels.tolist())], "image", shape, field="inputs")
    np.testing.assert_array_equal(out[0], pixels.reshape(-1))


# -- text -----------------------------------------------------------------------------------------
@PROFILE
@given(text=st.text(max_size=50) | st.text(min_size=MAX_TEXT_CHARS - 2, max_size=MAX_TEXT_CHARS + 2, alphabet="ab "))
def test_texts_pass_or_are_invalid_with_a_reason(text) -> None:
    out = decodes_or_invalid([InputIn(text=text)], "text", [1])
    if text.strip() and len(text) <= MAX_TEXT_CHARS:
        assert out == [text]
    else:
        assert out is None


@PROFILE
@given(kind=st.sampled_from(["vector", "image", "text"]), field=st.sampled_from(INPUT_FIELDS))
def test_an_input_of_the_wrong_form_is_invalid(kind, field) -> None:
    value = {"x": [0.5], "x_b64": b64(np.zeros(1)), "image": "aGVsbG8=", "text": "hello"}[field]
    shape = [1] if kind != "image" else [1, 1, 1]
    out = decodes_or_invalid([InputIn(**{field: value})], kind, shape)
    takes = {"vector": {"x", "x_b64"}, "image": {"x", "x_b64", "image"}, "text": {"text"}}[kind]
    if field not in takes:
        assert out is None
    elif field != "image":  # "hello" is not an image
        assert out is not None


@PROFILE
@given(kind=st.text(max_size=8), shape=st.lists(st.integers(-3, 5), max_size=5))
def test_unknown_kinds_and_bad_shapes_are_invalid_not_errors(kind, shape) -> None:
    try:
        decode([InputIn(x=[0.5])], kind, shape, field="inputs")
    except BrainError as exc:
        assert exc.status == 422
    except Exception as exc:  # an unknown kind reaches the encoder registry first
        pytest.fail(f"{type(exc).__name__}: {exc}")


# -- request limits -------------------------------------------------------------------------------
@PROFILE
@given(n=st.integers(1, 30), limit=st.integers(1, 30), texts=st.lists(st.text(max_size=30), max_size=5),
       max_chars=st.integers(1, 30))
def test_check_limits(n, limit, texts, max_chars) -> None:
    items = [InputIn(x=[0.0])] * n + [InputIn(text=t) for t in texts]
    total = n + len(texts)
    try:
        check_limits(items, field="inputs", max_items=limit, setting="BRAIN_X", max_text_chars=max_chars)
    except Invalid as exc:
        assert total > limit or any(len(t) > max_chars for t in texts)
        assert ("BRAIN_X" if total > limit else "BRAIN_MAX_TEXT_CHARS") in exc.detail
    else:
        assert total <= limit and all(len(t) <= max_chars for t in texts)


# -- schemas --------------------------------------------------------------------------------------
@PROFILE
@given(given_fields=st.sets(st.sampled_from(INPUT_FIELDS)), label=st.integers(-(2**70), 2**70) | st.text(max_size=300))
def test_exactly_one_input_and_a_bounded_label(given_fields, label) -> None:
    values = {"x": [1.0], "x_b64": "AACAPw==", "image": "aGVsbG8=", "text": "hi"}
    body = {f: values[f] for f in given_fields}
    ok_label = (isinstance(label, int) and -(2**63) <= label < 2**63) or (
        isinstance(label, str) and 1 <= len(label) <= 256)
    try:
        SampleIn(**body, label=label)
    except ValidationError:
        assert len(given_fields) != 1 or not ok_label
    else:
        assert len(given_fields) == 1 and ok_label


@PROFILE
@given(body=json_values)
def test_request_bodies_validate_or_raise_validation_error(body) -> None:
    import json

    raw = json.dumps(body)  # NaN and Infinity included, as Python writes them
    for model in (PredictIn, SamplesIn, EvaluateIn, InputIn):
        try:
            model.model_validate_json(raw)
        except ValidationError:
            pass


@PROFILE
@given(bad=st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999"]))
def test_non_finite_numbers_are_refused_by_the_schemas(bad) -> None:
    with pytest.raises(ValidationError):
        SamplesIn.model_validate_json('{"task": "t", "samples": [{"x": [1], "label": %s}]}' % bad)
    from service.schemas import SleepPolicy

    with pytest.raises(ValidationError):
        SleepPolicy.model_validate_json('{"every_seconds": %s}' % bad)
