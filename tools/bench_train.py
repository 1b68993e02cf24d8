"""Training throughput of the text2img stage against a loop in the style of diffusers'
examples/text_to_image/train_text_to_image.py (VAE encoding every step, no latent cache),
on the same model config and the same data, side by side in one run.

    python tools/bench_train.py [--config configs/cpu/text2img.yaml] [--steps 20] [--images 64]

Each variant runs in its own process (peak memory is per process). Reported: images/s
(median step after warm-up), peak memory, and the U-Net training step's achieved FLOP/s
against this machine's measured fp32 matmul rate. Needs ldm.data (image folder + cache).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_images(folder: Path, count: int, resolution: int) -> None:
    """Synthetic captioned images (gradients and squares), PNG with sidecar .txt."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = rng.integers(0, 255, 3)
        ramp = np.linspace(0, 1, resolution)[:, None, None]
        array = (base * (1 - ramp) + rng.integers(0, 255, 3) * ramp).repeat(resolution, axis=1).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{i:05d}.png")
        (folder / f"{i:05d}.txt").write_text(f"a gradient from {base.tolist()} number {i % 7}")


def bench_config(args, work: Path):
    from ldm.training.config import load_train_config

    config = load_train_config(args.config, [
        f"data.path={work / 'images'}", f"train.output_dir={work / 'run'}", f"train.max_steps={args.steps}",
        f"train.batch_size={args.batch_size}", "train.save_every=100000", "train.log_every=1", "train.progress=false",
        "train.ema_decay=null", "validation.prompts=[]", "text2img.vae_from=null", "text2img.text_encoder_from=null",
        f"text2img.latent_cache={work / 'cache'}", "data.crop=center", "data.random_flip=false", "data.num_workers=0",
    ])
    if config.model.vae.scaling_factor is None:
        config.model.vae.scaling_factor = 0.18215
    return config


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_ours(args, work: Path) -> dict:
    from ldm.training.loop import train

    config = bench_config(args, work)
    started = time.perf_counter()
    train(config)
    total = time.perf_counter() - started
    rows = [json.loads(line) for line in (work / "run" / "log.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if "images_per_s" in r][args.warmup :]
    return {"images_per_s": statistics.median(rates), "wall_s_incl_cache_and_setup": total, "peak_memory_mb": peak_memory_mb()}


def run_baseline(args, work: Path) -> dict:
    """The diffusers example's inner loop, on our components and ldm.data's loader."""
    import dataclasses

    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from ldm.data import build_dataset, make_batches
    from ldm.models.components import build_components

    config = bench_config(args, work)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(0)
    parts = build_components(config.model)
    vae, text_encoder, unet = parts.vae, parts.first_text_encoder, parts.denoiser
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(parts.scheduler_config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.train.lr)
    lr_scheduler = get_scheduler("constant", optimizer)
    dataset = build_dataset(dataclasses.replace(config.data), seed=0, split="train")
    batches = make_batches(dataset, config.train.batch_size)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    vae.to(accelerator.device)
    text_encoder.to(accelerator.device)
    times, step = [], 0
    started = time.perf_counter()  # from one step's end to the next: data loading included, as in ours
    while step < args.steps:
        for batch in batches.epoch_batches():
            with accelerator.accumulate(unet):
                latents = vae.encode(batch["pixels"].to(accelerator.device)).latent_dist.sample()
                latents = latents * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
                noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
                encoder_hidden_states = text_encoder(text_encoder.tokenize(batch["caption"]).to(accelerator.device)).hidden
                target = noise if noise_scheduler.config.prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
                model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
                loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(unet.parameters(), config.train.max_grad_norm or 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            times.append(time.perf_counter() - started)
            started = time.perf_counter()
            step += 1
            if step >= args.steps:
                break
    per_step = statistics.median(times[args.warmup :])
    return {"images_per_s": config.train.batch_size / per_step, "peak_memory_mb": peak_memory_mb()}


def denoiser_flops_and_matmul_rate(args, work: Path) -> dict:
    """FLOPs of one denoiser (U-Net or DiT, per the config) forward+backward at the bench batch
    (torch's flop counter), its time alone as configured and, side by side, in channels-last
    memory format and under torch.compile; and the machine's fp32 matmul rate (2048^2 matmuls)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ldm.diffusion.conditioning import Conditioning
    from ldm.diffusion.denoiser import denoise_call
    from ldm.models.components import build_components

    config = bench_config(args, work)
    parts = build_components(config.model)
    denoiser = parts.denoiser.train()
    b = config.train.batch_size
    size = config.data.resolution // config.model.vae.downsample_factor
    latents = torch.randn(b, config.model.vae.latent_channels, size, size)
    context = torch.randn(b, config.model.text_encoder.context_length, config.model.text_encoder.width)
    timesteps = torch.randint(0, 1000, (b,))

    def step(model, x):
        denoise_call(model, x, timesteps, Conditioning(context)).square().mean().backward()

    def median_time(model, x, repeats=5) -> float:
        step(model, x)  # warm-up (and, compiled, the compilation)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            step(model, x)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    with FlopCounterMode(display=False) as counter:
        step(denoiser, latents)
    flops = counter.get_total_flops()
    seconds = {"as configured": median_time(denoiser, latents)}
    seconds["channels-last"] = median_time(denoiser.to(memory_format=torch.channels_last), latents.contiguous(memory_format=torch.channels_last))
    denoiser.to(memory_format=torch.contiguous_format)
    if args.compile:
        seconds["torch.compile"] = median_time(torch.compile(denoiser), latents)
    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    x @ y
    started = time.perf_counter()
    for _ in range(10):
        x @ y
    matmul = 10 * 2 * n**3 / (time.perf_counter() - started)
    # What the cache saves per step: one VAE encode of the batch (Amdahl's ceiling on the speed-up).
    pixels = torch.rand(b, 3, config.data.resolution, config.data.resolution) * 2 - 1
    encode_times = []
    with torch.no_grad():
        for _ in range(4):
            started = time.perf_counter()
            parts.vae.encode(pixels)
            encode_times.append(time.perf_counter() - started)
    return {"backbone": config.model.denoiser.kind, "step_gflop": flops / 1e9, "matmul_gflops_per_s": matmul / 1e9, "step_s": seconds,
            "vae_encode_s": statistics.median(encode_times[1:])}


VARIANTS = {"ours": run_ours, "baseline": run_baseline, "flops": denoiser_flops_and_matmul_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "cpu" / "text2img.yaml"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the median")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="also time the denoiser step under torch.compile (minutes to compile)")
    parser.add_argument("--only-denoiser", action="store_true", help="skip the loop comparison: the denoiser step's FLOP rate only")
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child process: one variant, JSON on the last line
        print(json.dumps(VARIANTS[args.variant](args, Path(args.work))))
        return
    from ldm.training.config import load_train_config

    resolution = load_train_config(args.config).data.resolution
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        make_images(Path(work) / "images", args.images, resolution)
        results = {}
        for variant in ("flops",) if args.only_denoiser else ("baseline", "ours", "flops"):
            command = [sys.executable, __file__, "--variant", variant, "--work", work, "--config", args.config,
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
            command += ["--compile"] if args.compile else []
            out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if out.returncode != 0:
                sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
            results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    flops = results["flops"]
    print(f"config {args.config}: {resolution} px, batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), {args.images} images")
    if not args.only_denoiser:
        base, ours = results["baseline"], results["ours"]
        print(f"{'':34}{'images/s':>10}{'peak MB':>10}")
        print(f"{'diffusers-example loop (no cache)':34}{base['images_per_s']:>10.2f}{base['peak_memory_mb']:>10.0f}")
        print(f"{'ldm-train text2img (latent cache)':34}{ours['images_per_s']:>10.2f}{ours['peak_memory_mb']:>10.0f}")
        print(f"speed-up: {ours['images_per_s'] / base['images_per_s']:.2f}x (target >= 2x); ldm-train wall time incl. cache build and setup: {ours['wall_s_incl_cache_and_setup']:.1f} s")
        step_s = flops["step_s"]["as configured"]
        ceiling = (step_s + flops["vae_encode_s"]) / step_s
        print(f"per batch: denoiser fwd+bwd {step_s:.2f} s, VAE encode {flops['vae_encode_s']:.2f} s: "
              f"skipping the encode can speed a step up {ceiling:.2f}x at most")
    matmul = flops["matmul_gflops_per_s"]
    print(f"{flops['backbone']} step (fwd+bwd): {flops['step_gflop']:.2f} GFLOP; this machine's fp32 matmul rate {matmul:.1f} GFLOP/s")
    for form, seconds in flops["step_s"].items():
        achieved = flops["step_gflop"] / seconds
        print(f"  {form:14} {seconds:6.3f} s  {achieved:6.1f} GFLOP/s = {100 * achieved / matmul:3.0f}% of the matmul rate")

if __name__ == "__main__":
    main()
