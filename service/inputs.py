"""Turning request inputs into float32 matrices, with a clear reason for whatever is wrong.

- ``vector`` brains take ``x``: numbers, flat or nested to the brain's shape.
- ``image`` brains (shape ``[H, W]`` grey or ``[C, H, W]`` with C = 1 or 3) take ``image``: a
  base64 PNG or JPEG, converted to the brain's channels, resized to H x W (torchvision) and scaled
  to [0, 1]; or ``x``: raw pixels of exactly the brain's shape, already in [0, 1].
  An image's header is read first, so an oversized image is refused before it is decoded. The
  images of one request have a budget of pixel values (``check_images``, ``BRAIN_MAX_DECODED_PIXELS``),
  checked before any is decompressed: what they decode to (a PNG of 4096 x 4096 pixels of one
  colour compresses to 16 kB: a 64 MiB body carries 3,000, 50 G pixels) and what they are resized
  to (the brain's shape each: 2,048 one-pixel PNGs to a 3 x 256 x 256 brain are 400 M). Bytes
  are decoded by Pillow, which raises on corrupt data: torchvision.io's decoder (libpng) was seen to
  crash the whole process with a segmentation fault on a corrupt PNG, which a client must never
  be able to do.
- ``text`` brains (shape ``[1]``: one string a sample) take ``text``: a non-empty string of at
  most ``MAX_TEXT_CHARS`` characters.

``decode`` then runs the brain's encoder (``models.encoders``) over the batch, so what comes out
is what the learner takes: ``[B, prod(shape)]`` pixels or numbers for ``flatten`` / ``pixels``,
``[B, 1280]`` for ``efficientnet-lite0``, ``[B, 384]`` for ``all-minilm-l6-v2``.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from models import encoders
from service.errors import Invalid

SUPPORTED_KINDS = ("vector", "image", "text")
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_TEXT_CHARS = 10_000
TEXT_SHAPE = [1]


def check_kind(kind: str, shape: Sequence[int] | None = None) -> None:
    if kind not in SUPPORTED_KINDS:
        raise Invalid(f"unknown input kind {kind!r}; the kinds are {', '.join(SUPPORTED_KINDS)}")
    if shape is not None and (not shape or not all(isinstance(d, (int, np.integer)) and d >= 1 for d in shape)):
        raise Invalid(f"an input shape is a list of positive integers, got {list(shape)}")
    if kind == "image" and shape is not None and not (len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))):
        raise Invalid(f"an image brain's shape is [H, W] or [C, H, W] with C 1 or 3, got {list(shape)}")
    if kind == "text" and shape is not None and list(shape) != TEXT_SHAPE:
        raise Invalid(f"a text brain's shape is {TEXT_SHAPE} (one string a sample), got {list(shape)}")


def check_limits(items: Sequence, *, field: str, max_items: int, setting: str, max_text_chars: int) -> None:
    """The limits of one request, checked before anything is decoded: at most ``max_items`` inputs
    (``setting`` names the ``BRAIN_*`` variable that sets it) and texts of at most ``max_text_chars``
    characters (``BRAIN_MAX_TEXT_CHARS``; :func:`decode` alone holds texts to ``MAX_TEXT_CHARS``)."""
    if len(items) > max_items:
        raise Invalid(f"{field}: {len(items)} in one request; the limit is {max_items} ({setting})")
    for i, item in enumerate(items):
        text = getattr(item, "text", None)
        if isinstance(text, str) and len(text) > max_text_chars:
            raise Invalid(
                f"{field}[{i}].text: {len(text)} characters; the limit is {max_text_chars} (BRAIN_MAX_TEXT_CHARS)"
            )


def check_images(items: Sequence, kind: str, shape: Sequence[int], *, field: str, max_pixels: int) -> None:
    """The images of one request, before any is decompressed: the pixel values (pixels times the
    brain's channels) they are resized to, and those their headers say they decode to, are each at
    most ``max_pixels`` in all (``BRAIN_MAX_DECODED_PIXELS``)."""
    if kind != "image":
        return
    images = [(i, item.image) for i, item in enumerate(items) if getattr(item, "image", None) is not None]
    if not images:
        return
    channels = 1 if len(shape) == 2 else int(shape[0])
    resized = len(images) * int(np.prod(shape))
    if resized > max_pixels:
        raise Invalid(f"{field}: {len(images)} images resized to {list(shape)} are {resized} pixel values; "
                      f"the limit is {max_pixels} (BRAIN_MAX_DECODED_PIXELS)")
    decoded = 0
    for i, data in images:
        where = f"{field}[{i}]"
        with _opened(_image_bytes(data, where), where) as img:
            w, h = img.size
        if decoded + w * h * channels > max_pixels:
            raise Invalid(f"{where}.image: {w}x{h} pixels; the images of one request may decode to {max_pixels} "
                          f"pixel values in all (BRAIN_MAX_DECODED_PIXELS), the ones before it to {decoded}")
        decoded += w * h * channels


def decode(
    items: Sequence, kind: str, shape: Sequence[int], *, field: str, encoder: str | None = None,
    max_pixels: int | None = None,
) -> np.ndarray:
    """``items`` have ``x`` / ``image`` / ``text``; returns the learner's input, ``[len(items), D]``
    float32: the raw values (:func:`decode_raw`) through ``encoder`` (default: the kind's default,
    ``flatten`` / ``pixels`` / ``all-minilm-l6-v2``). With ``max_pixels``, :func:`check_images` first."""
    check_kind(kind, shape)
    if max_pixels is not None:
        check_images(items, kind, shape, field=field, max_pixels=max_pixels)
    name = encoder or encoders.DEFAULTS[kind]
    try:
        enc = encoders.get(name)
    except KeyError:
        raise Invalid(f"unknown encoder {name!r}") from None
    if isinstance(enc, encoders.Identity):
        return decode_raw(items, kind, shape, field=field)  # already [B, prod(shape)] float32
    try:
        enc.check_available()
    except encoders.EncoderUnavailable as exc:
        raise Invalid(str(exc)) from None
    if enc.max_batch is not None and len(items) > enc.max_batch:
        raise Invalid(f"{field}: {len(items)} inputs; encoder {enc.name!r} takes at most {enc.max_batch} a request")
    return enc.encode(decode_raw(items, kind, shape, field=field), shape).numpy()


def decode_raw(items: Sequence, kind: str, shape: Sequence[int], *, field: str) -> np.ndarray | list[str]:
    """``[len(items), prod(shape)]`` float32 for vector and image brains; the strings for text ones."""
    check_kind(kind, shape)
    if kind == "text":
        return [_text(item, f"{field}[{i}]") for i, item in enumerate(items)]
    dim = int(np.prod(shape))
    fast = _all_flat_vectors(items, dim)
    if fast is not None:
        return fast
    out = np.empty((len(items), dim), dtype=np.float32)
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if item.x is not None:
            out[i] = _vector(item.x, shape, dim, where)
        elif getattr(item, "x_b64", None) is not None:
            out[i] = _vector_b64(item.x_b64, dim, where)
        elif kind == "image" and item.image is not None:
            out[i] = _image(item.image, shape, where)
        else:
            takes = ("'x' (a list of numbers) or 'x_b64'" if kind == "vector"
                     else "'image' (base64 PNG/JPEG), 'x' or 'x_b64' (pixels)")
            raise Invalid(f"{where}: a {kind} brain takes {takes}")
    return out


def _all_flat_vectors(items: Sequence, dim: int) -> np.ndarray | None:
    """Every item a flat, finite ``x`` of ``dim`` numbers, or every item an ``x_b64`` of ``dim``
    float32: all rows converted in one call, cheaper than row by row (docs/bench/predict-path.md).
    ``None`` when anything is off, so that the row by row path names the first bad input and
    why."""
    encoded = [getattr(item, "x_b64", None) for item in items]
    if all(e is not None for e in encoded):
        try:  # row by row: each row's base64 may end in padding
            raw = b"".join(base64.b64decode(e, validate=True) for e in encoded)
        except (binascii.Error, ValueError):
            return None
        if any(len(e) != (4 * dim + 2) // 3 * 4 for e in encoded) or len(raw) != 4 * dim * len(items):
            return None
        out = np.frombuffer(raw, dtype="<f4").reshape(len(items), dim).astype(np.float32)
    else:
        rows = [item.x for item in items]
        if any(row is None or len(row) != dim for row in rows):
            return None
        try:
            with np.errstate(over="ignore"):
                out = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):
            return None
    if out.shape != (len(items), dim) or not np.isfinite(out).all():
        return None
    return out


def _text(item: object, where: str) -> str:
    text = getattr(item, "text", None)
    if text is None:
        raise Invalid(f"{where}: a text brain takes 'text' (a string)")
    if len(text) > MAX_TEXT_CHARS:
        raise Invalid(f"{where}.text: {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    if not text.strip():
        raise Invalid(f"{where}.text: the text is empty")
    return text


def _vector(x: list, shape: Sequence[int], dim: int, where: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):
            arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):
        raise Invalid(f"{where}.x: expected numbers shaped {list(shape)}, got ragged or non-numeric values") from None
    if arr.shape != tuple(shape) and arr.shape != (dim,):
        raise Invalid(f"{where}.x: expected shape {list(shape)} ({dim} values), got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():  # NaN or infinity given, or a number too large for float32
        if np.isfinite(np.asarray(x, dtype=np.float64)).all():
            raise Invalid(f"{where}.x: values must fit in float32")
        raise Invalid(f"{where}.x: values must be finite numbers (no NaN or infinity)")
    return arr.reshape(dim)


def _vector_b64(data: str, dim: int, where: str) -> np.ndarray:
    """Base64 of ``dim`` little-endian float32 values (4 * dim bytes), finite."""
    if len(data) > (4 * dim + 2) // 3 * 4 + 4:
        raise Invalid(f"{where}.x_b64: longer than {dim} float32 values")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{where}.x_b64: not valid base64") from None
    if len(raw) != 4 * dim:
        raise Invalid(f"{where}.x_b64: {len(raw)} bytes; {dim} float32 values take {4 * dim}")
    arr = np.frombuffer(raw, dtype="<f4")
    if not np.isfinite(arr).all():
        raise Invalid(f"{where}.x_b64: values must be finite numbers (no NaN or infinity)")
    return arr.astype(np.float32)


def _image_bytes(data: str, where: str) -> bytes:
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise Invalid(f"{where}.image: larger than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{where}.image: not valid base64") from None


@contextmanager
def _opened(raw: bytes, where: str) -> Iterator:
    """The image, its header read (nothing decompressed yet): a PNG or JPEG of at most
    ``MAX_IMAGE_PIXELS``; whatever goes wrong inside, a 422 that says what."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as img:  # reads the header only
            if img.format not in ("PNG", "JPEG"):
                raise Invalid(f"{where}.image: {img.format} images are not accepted; send PNG or JPEG")
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise Invalid(f"{where}.image: {w}x{h} pixels exceeds the limit of {MAX_IMAGE_PIXELS}")
            yield img
    except Invalid:
        raise
    except Image.DecompressionBombError:  # Pillow's own check, in open(), of a header far over ours
        raise Invalid(f"{where}.image: more pixels than the limit of {MAX_IMAGE_PIXELS}") from None
    except UnidentifiedImageError:
        raise Invalid(f"{where}.image: not a PNG or JPEG image") from None
    except Exception:  # noqa: BLE001 - corrupt data surfaces as OSError, ValueError, SyntaxError,
        # struct.error, zlib.error, EOFError... whatever a decoder hits: all the client's fault
        raise Invalid(f"{where}.image: the image data is corrupt") from None


def _image(data: str, shape: Sequence[int], where: str) -> np.ndarray:
    """The image's pixels, resized to ``shape``."""
    import torch
    from torchvision.transforms.functional import resize

    channels = 1 if len(shape) == 2 else shape[0]
    with _opened(_image_bytes(data, where), where) as img:
        pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    tensor = torch.from_numpy(pixels.copy())
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    size = list(shape[-2:])
    if list(tensor.shape[-2:]) != size:
        tensor = resize(tensor, size, antialias=True)
    return (tensor.to(torch.float32) / 255.0).reshape(-1).numpy()
