"""The one tensor/array conversion: same values whichever side a caller hands in."""

from __future__ import annotations

import numpy as np
import torch

from eibacl.evaluate.arrays import as_numpy, as_tensor


def test_as_numpy_detaches_tensors_and_widens_half_precision():
    t = torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16, requires_grad=True)
    out = as_numpy(t)
    assert out.dtype == np.float32 and out.tolist() == [[1.5, -2.0]]
    assert as_numpy([1, 2], np.float64).dtype == np.float64
    assert as_numpy(torch.tensor([3, 4])).tolist() == [3, 4]


def test_as_tensor_keeps_values_and_converts_the_dtype():
    x = np.array([[0.25, 1.0]], dtype=np.float64)
    t = as_tensor(x, torch.float32, device="cpu")
    assert t.dtype == torch.float32 and t.tolist() == [[0.25, 1.0]]
    grad = torch.ones(2, requires_grad=True)
    assert not as_tensor(grad, torch.int64).requires_grad
