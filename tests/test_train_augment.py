"""Normalisation and batched, seeded augmentation."""
import numpy as np
import torch

from medtransfer.train.augment import GREY_MEAN, GREY_STD, normalise, prepare_batch


def _batch(n=6, s=24):
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (n, s, s), dtype=np.uint8))


def test_normalise_matches_the_model_contract():
    x = torch.tensor([[[0, 255], [114, 58]]], dtype=torch.uint8)
    out = normalise(x)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    expected = (x.float() / 255 - 0.449) / 0.226
    torch.testing.assert_close(out[:, 0], expected)
    assert (GREY_MEAN, GREY_STD) == (0.449, 0.226)


def test_augment_off_is_plain_normalisation():
    x = _batch()
    assert torch.equal(prepare_batch(x, augment=False), normalise(x))


def test_augment_is_seeded_per_image_and_stays_in_range():
    x = _batch()
    a = prepare_batch(x, True, torch.Generator().manual_seed(1))
    b = prepare_batch(x, True, torch.Generator().manual_seed(1))
    c = prepare_batch(x, True, torch.Generator().manual_seed(2))
    assert a.shape == (6, 1, 24, 24)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, normalise(x))
    lo, hi = (0 - GREY_MEAN) / GREY_STD, (1 - GREY_MEAN) / GREY_STD
    assert a.min() >= lo - 1e-5 and a.max() <= hi + 1e-5


def test_augment_is_mild():
    # A smooth image should survive ±10° / ±10% / ±5% jitter mostly unchanged.
    s = 32
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    img = (128 + 100 * torch.sin(xx / 6.0) * torch.cos(yy / 7.0)).to(torch.uint8)
    x = img.expand(16, s, s).contiguous()
    a = prepare_batch(x, True, torch.Generator().manual_seed(0))
    inner = (slice(None), 0, slice(6, -6), slice(6, -6))
    diff = (a[inner] - normalise(x)[inner]).abs().mean().item()
    assert 0 < diff < 0.5   # in normalised units (1 unit ≈ 58 grey levels)
