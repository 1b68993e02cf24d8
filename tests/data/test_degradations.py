"""Low-resolution pictures for super-resolution training: downscaled to 8-bit levels, degraded
by draws that follow (seed, step) and split across processes as one process draws them."""

import torch

from ldm.data.degradations import Degradations, downscale, gaussian_blur, jpeg
from ldm.training.batches import Randomness

ALL = Degradations(blur=(0.5, 1.5), noise=(0.0, 0.05), jpeg_quality=(40, 90))


def pictures(n=4, size=16, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 2 - 1).clamp(-1, 1)  # (n, 3, size, size)


def test_downscale_is_the_factor_smaller_at_8_bit_levels():
    low = downscale(pictures(2, 32), 4)
    assert low.shape == (2, 3, 8, 8)
    levels = (low + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and low.min() >= -1 and low.max() <= 1
    flat = torch.full((1, 3, 32, 32), 0.2)
    assert torch.allclose(downscale(flat, 2), flat[..., :16, :16], atol=1 / 127.5)


def test_degradations_follow_seed_and_step():
    x = pictures()
    first = ALL(x, Randomness(seed=3, step=5, micro_step=0))
    again = ALL(x, Randomness(seed=3, step=5, micro_step=0))
    other = ALL(x, Randomness(seed=3, step=6, micro_step=0))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == x.shape and first.min() >= -1 and first.max() <= 1
    assert torch.equal(Degradations()(x, Randomness(0, 0, 0)), x)  # all off: unchanged


def test_two_processes_degrade_their_halves_as_one_process_degrades_the_batch():
    x = pictures(4)
    whole = ALL(x, Randomness(seed=1, step=2, micro_step=0))
    halves = [ALL(x[2 * r : 2 * r + 2], Randomness(seed=1, step=2, micro_step=0, rank=r, world_size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)


def test_each_degradation_does_what_it_says():
    x = pictures(2)
    blurred = gaussian_blur(x, torch.tensor([0.0, 2.0]))
    assert torch.equal(blurred[0], x[0])
    assert (blurred[1].diff(dim=-1).abs().mean()) < 0.5 * x[1].diff(dim=-1).abs().mean()  # high frequencies gone
    compressed = jpeg(x, [10, 95])
    error = [(compressed[i] - x[i]).abs().mean() for i in (0, 1)]
    assert error[0] > error[1] > 0  # lower quality, larger error
    noisy = Degradations(noise=(0.1, 0.1))(torch.zeros(1, 3, 64, 64), Randomness(0, 0, 0))
    assert abs(float(noisy.std()) - 0.2) < 0.02  # std 0.1 of the [0, 1] range: 0.2 in [-1, 1]
