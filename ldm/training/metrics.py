"""Image quality metrics for the autoencoder: PSNR and SSIM on pixels in [-1, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image (dB), for (B, C, H, W) in [-1, 1]; inf if equal."""
    a01, b01 = (a.float() + 1) / 2, (b.float() + 1) / 2  # peak value 1
    mse = (a01 - b01).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)  # mse 0 -> inf


def _gaussian_window(size: int, sigma: float, channels: int) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()  # (C, 1, k, k)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004: 11x11 gaussian window, sigma 1.5,
    K1 0.01, K2 0.03, valid region), for (B, C, H, W) in [-1, 1]."""
    x, y = (a.float() + 1) / 2, (b.float() + 1) / 2
    channels = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    kernel = _gaussian_window(window, sigma, channels).to(x.device)
    c1, c2 = 0.01**2, 0.03**2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def expected_psnr(noise_std_01: float) -> float:
    """PSNR of images corrupted by gaussian noise of this std (on the [0, 1] scale)."""
    return -20 * math.log10(noise_std_01)
