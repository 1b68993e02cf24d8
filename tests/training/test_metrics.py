import math

import torch

from ldm.training.metrics import expected_psnr, psnr, ssim


def images(seed=0, shape=(2, 3, 32, 32)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def test_identical_images():
    a = images()
    assert torch.isinf(psnr(a, a)).all()
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-5)


def test_psnr_of_known_noise_is_analytic():
    a = images(shape=(4, 3, 64, 64))
    std01 = 0.05  # noise std on the [0, 1] scale = 0.1 on [-1, 1]
    noisy = a + 2 * std01 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    assert abs(float(psnr(a, noisy).mean()) - expected_psnr(std01)) < 0.1  # 26.02 dB
    assert math.isclose(expected_psnr(0.1), 20.0)


def test_ssim_falls_with_noise_and_is_symmetric():
    a = images()
    g = torch.Generator().manual_seed(2)
    slightly = a + 0.05 * torch.randn(a.shape, generator=g)
    badly = a + 0.5 * torch.randn(a.shape, generator=g)
    s1, s2 = ssim(a, slightly), ssim(a, badly)
    assert (s1 > s2).all() and (s1 < 1).all()
    assert torch.allclose(ssim(a, badly), ssim(badly, a), atol=1e-6)
    assert torch.allclose(ssim(a, -a.flip(-1)), ssim(-a.flip(-1), a), atol=1e-6)
