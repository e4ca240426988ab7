"""Real data shipped by packages (nothing downloads): Fashion-MNIST from Debian's
``dataset-fashion-mnist`` (read by ``brain_client.fashion``), class-stratified hold-outs, and
fortunes labelled by topic from Debian's ``fortunes``."""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

# Fashion-MNIST's reader and its split are the client's (the demo streams them from a client-only
# install); the benchmarks use them from here.
from brain_client.fashion import FASHION_CLASSES, FASHION_DIR, Task, fashion_mnist, split_tasks

__all__ = ["FASHION_CLASSES", "FASHION_DIR", "FORTUNES_DIR", "Task", "fashion_mnist", "fortunes", "hold_out",
           "split_tasks"]


def hold_out(y: np.ndarray, pool: np.ndarray, *, fraction: float, cap: int | None,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split the indices ``pool`` (into ``y``) into ``(rest, held)``, class-stratified: ``held``
    takes ``fraction`` of each class's samples (rounded), all classes together at most ``cap``
    (shared out in proportion). Both in a random order drawn from ``rng``."""
    pool = np.asarray(pool)
    classes, counts = np.unique(y[pool], return_counts=True)
    want = np.round(counts * fraction).astype(int)
    if cap is not None and want.sum() > cap:
        want = np.floor(counts * cap / counts.sum()).astype(int)
    rest, held = [], []
    for c, n in zip(classes, want):
        members = rng.permutation(pool[y[pool] == c])
        held.append(members[:n])
        rest.append(members[n:])
    return rng.permutation(np.concatenate(rest)), rng.permutation(np.concatenate(held))


# -- text: fortunes labelled by topic (Debian's ``fortunes``) --------------------------------------
FORTUNES_DIR = Path("/usr/share/games/fortunes")


def _overstrike(text: str) -> str:
    """Drop terminal overstriking (``_\\bI`` underlines I, ``____\\b\\b\\b\\bonly`` underlines a word):
    each backspace erases the character before it, which leaves the printed text."""
    while "\b" in text:
        stripped = re.sub(r"[^\n\x08]\x08", "", text)
        if stripped == text:  # a backspace with nothing before it
            stripped = text.replace("\b", "")
        text = stripped
    return text


@lru_cache(maxsize=8)
def fortunes(topics: tuple[str, ...], root: Path = FORTUNES_DIR) -> tuple[tuple[str, ...], np.ndarray]:
    """``(texts, y)``: the entries of the fortune files ``topics`` (entries are separated by lines
    holding ``%``), whitespace collapsed, ``y[i]`` the index in ``topics`` of ``texts[i]``'s file.
    Entries found in more than one of the files, or twice in one, are dropped, so a text has one
    label and can fall in only one split."""
    per_topic = []
    for topic in topics:
        path = root / topic
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: install the Debian package fortunes")
        raw = _overstrike(path.read_text(encoding="utf-8", errors="replace"))
        entries = (" ".join(e.split()) for e in re.split(r"^%$", raw, flags=re.M))
        per_topic.append([e for e in entries if e])
    counts = Counter(e for entries in per_topic for e in entries)
    texts, y = [], []
    for label, entries in enumerate(per_topic):
        for e in entries:
            if counts[e] == 1:
                texts.append(e)
                y.append(label)
    y_arr = np.array(y, dtype=np.int64)
    y_arr.setflags(write=False)
    return tuple(texts), y_arr
