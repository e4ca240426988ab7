from __future__ import annotations

import pytest
import torch

from models.encoders import flatten_vector


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
