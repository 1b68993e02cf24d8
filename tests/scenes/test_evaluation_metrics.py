"""PSNR and SSIM (ldm/scenes/metrics.py) against their definitions."""

import math

import pytest
import torch

from ldm.metrics import psnr, ssim


def grey_with_noise(sigma: float, seed: int = 0, shape=(2, 3, 64, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clean = torch.full(shape, 0.5)
    # sigma <= 0.1 keeps 0.5 +- 5 sigma inside [0, 1]: no clipping to bend the noise level
    return clean, clean + sigma * torch.randn(shape, generator=generator)


def scene_like(seed: int = 0) -> torch.Tensor:
    """Smooth structure, so SSIM has something to lose."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, 3, 8, 8, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bilinear", align_corners=False)


def test_identical_images_give_infinite_psnr_and_ssim_one():
    image = scene_like()
    assert torch.isinf(psnr(image, image)).all()
    assert torch.allclose(ssim(image, image), torch.ones(2), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.1])
def test_psnr_of_known_noise(sigma):
    clean, noisy = grey_with_noise(sigma)
    expected = 20 * math.log10(1 / sigma)
    assert psnr(clean, noisy).shape == (2,)
    assert psnr(clean, noisy) == pytest.approx([expected, expected], abs=0.2)


def test_ssim_decreases_with_noise():
    image = scene_like()
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(image.shape, generator=generator)
    scores = [ssim(image, (image + sigma * noise).clamp(0, 1)).mean().item() for sigma in (0.0, 0.02, 0.05, 0.1, 0.2)]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


def test_ssim_matches_scikit_image():
    from skimage import metrics  # the independent implementation (dev extra)

    a = scene_like(2)
    b = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(len(a)):
        theirs = metrics.structural_similarity(
            a[i].permute(1, 2, 0).numpy(),
            b[i].permute(1, 2, 0).numpy(),
            channel_axis=2,
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ours[i].item() == pytest.approx(theirs, abs=1e-5)


def test_mismatched_or_tiny_images_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        psnr(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 8))
    with pytest.raises(ValueError, match="at least 11 px"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
