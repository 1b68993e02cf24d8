"""Image similarity: PSNR and SSIM on (B, 3, H, W) images in [0, 1], one value per image.

Shared by the autoencoder stage (held-out scores) and the evaluation command.

- `psnr`: 10 log10(1 / MSE) in dB over all channels and pixels; `inf` for identical images
  (no cap: a mean over a batch holding one is inf too, which is honest for "lossless").
- `ssim`: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, data range 1; computed per channel over the "valid" window positions (no
  padding, as in the paper) and averaged over positions and channels. This equals
  scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,), for images in [0, 1]."""
    _check(a, b)
    mse = (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse)).float()  # 1/0 -> inf for identical images


def _gaussian_line(channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The 11-tap Gaussian, (channels, 1, 11): the 2-D window is its outer product with itself."""
    offsets = torch.arange(SSIM_WINDOW, dtype=dtype, device=device) - (SSIM_WINDOW - 1) / 2
    line = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (line / line.sum()).expand(channels, 1, SSIM_WINDOW)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image, (B,), for images in [0, 1] at least 11 px a side."""
    _check(a, b)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs images at least {SSIM_WINDOW} px a side, got {tuple(a.shape[-2:])}")
    a, b = a.double(), b.double()
    channels = a.shape[1]
    line = _gaussian_line(channels, a.dtype, a.device)

    def local_mean(x: torch.Tensor) -> torch.Tensor:
        # The separable window as two 1-D passes: the 11x11 one's sums, 11 times fewer products
        # (float64 depthwise convolutions have no fast CPU path: 6 s a 512 px picture otherwise).
        rows = F.conv2d(x, line[:, :, :, None], groups=channels)
        return F.conv2d(rows, line[:, :, None, :], groups=channels)  # (B, C, H-10, W-10)

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a = local_mean(a * a) - mu_a**2
    var_b = local_mean(b * b) - mu_b**2
    covariance = local_mean(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(dim=(1, 2, 3)).float()
