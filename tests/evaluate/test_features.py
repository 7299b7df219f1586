import pytest
import torch
from torch import nn

from eibacl.evaluate.features import extract_features


class _Recorder(nn.Module):
    """Flattens the input and records what it saw (mode, grad, value range)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(12)
        self.seen: list[tuple[bool, bool, float, float, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(
            (self.training, torch.is_grad_enabled(), float(x.min()), float(x.max()), x.shape[0])
        )
        return self.bn(x.flatten(1))


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (n, 3, 2, 2), generator=g, dtype=torch.uint8)
    imgs[0] = 0
    imgs[1] = 255
    return imgs


def test_batches_eval_mode_pixels_in_unit_range() -> None:
    enc = _Recorder()
    with torch.no_grad():
        enc.bn.running_mean.fill_(0.25)  # eval mode must use these, not batch statistics
    imgs = _images(10)
    feats = extract_features(enc, imgs, batch_size=4)
    assert feats.shape == (10, 12) and feats.dtype == torch.float32
    assert [s[4] for s in enc.seen] == [4, 4, 2]
    assert not any(s[0] for s in enc.seen)  # eval mode
    assert not any(s[1] for s in enc.seen)  # no autograd
    # default: no normalisation (eibacl encoders normalise their own input)
    assert min(s[2] for s in enc.seen) == 0.0 and max(s[3] for s in enc.seen) == 1.0
    expected = (imgs.float() / 255.0).flatten(1) - 0.25
    expected = expected / torch.sqrt(torch.tensor(1.0 + enc.bn.eps))
    torch.testing.assert_close(feats, expected)
    assert enc.training  # mode restored


def test_custom_normalize_and_mode_restored_when_eval() -> None:
    enc = _Recorder().eval()
    feats = extract_features(nn.Flatten(), _images(3), normalize_fn=lambda x: (x - 0.5) / 0.5)
    assert float(feats.min()) == -1.0 and float(feats.max()) == 1.0
    extract_features(enc, _images(3))
    assert not enc.training


def test_rejects_non_uint8_or_wrong_rank_or_empty() -> None:
    enc = nn.Flatten()
    with pytest.raises(ValueError, match="uint8"):
        extract_features(enc, torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="4-D"):
        extract_features(enc, torch.zeros(2, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="empty"):
        extract_features(enc, torch.zeros(0, 1, 4, 4, dtype=torch.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast_returns_float32_cpu() -> None:
    enc = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).cuda()
    imgs = _images(7)
    feats = extract_features(enc, imgs, device="cuda", batch_size=3)
    assert feats.device.type == "cpu" and feats.dtype == torch.float32
    ref = extract_features(enc.cpu(), imgs)
    torch.testing.assert_close(feats, ref, atol=0.05, rtol=0.05)  # bf16 tolerance
