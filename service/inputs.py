"""Turning request inputs into float32 matrices, with a clear reason for whatever is wrong."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.errors import Invalid

SUPPORTED_KINDS = ("vector",)


def check_kind(kind: str) -> None:
    if kind not in SUPPORTED_KINDS:
        raise Invalid(f"input kind {kind!r} is not supported yet; supported: {', '.join(SUPPORTED_KINDS)}")


def decode(items: Sequence, kind: str, shape: Sequence[int], *, field: str) -> np.ndarray:
    """``items`` have ``x`` / ``image`` / ``text``; returns ``[len(items), prod(shape)]`` float32."""
    check_kind(kind)
    dim = int(np.prod(shape))
    out = np.empty((len(items), dim), dtype=np.float32)
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        if item.x is None:
            raise Invalid(f"{where}: a {kind} brain takes 'x' (a list of numbers)")
        out[i] = _vector(item.x, shape, dim, where)
    return out


def _vector(x: list, shape: Sequence[int], dim: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise Invalid(f"{where}.x: expected numbers shaped {list(shape)}, got ragged or non-numeric values") from None
    if arr.shape != tuple(shape) and arr.shape != (dim,):
        raise Invalid(f"{where}.x: expected shape {list(shape)} ({dim} values), got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise Invalid(f"{where}.x: values must be finite numbers (no NaN or infinity)")
    if np.abs(arr).max(initial=0.0) > 3.0e38:
        raise Invalid(f"{where}.x: values must fit in float32")
    return arr.reshape(dim).astype(np.float32)
