"""Benchmark: our txt2img loop against diffusers' StableDiffusionPipeline (an SDXL model:
StableDiffusionXLPipeline; an SD3 model: StableDiffusion3Pipeline), side by side.

Same components, sampler, steps, cfg and initial latents; the runs alternate (ours, theirs,
ours, ...) so that machine noise hits both alike; the two images must agree (AGREEMENT).
Reports the median time per image and per denoiser evaluation, the ratio ours/theirs (1.0 =
the loop adds nothing), peak memory of each (measured in its own subprocess on CPU; CUDA's
allocator peak on GPU), and the cold-start time of `ldm-generate --help` and of a whole
one-image `ldm-generate` run.

    python tools/bench_generate.py                       # a small random model on CPU
    python tools/bench_generate.py --model DIR --device cuda --dtype fp16 --steps 20
    python tools/bench_generate.py --sdxl                # a small random SDXL-shaped model, 256 px
    python tools/bench_generate.py --sd3                 # a small random SD3-shaped model, 256 px
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A mid-sized random model (about the demo model's size) for runs without --model.
BENCH_MODEL = {
    "name": "bench",
    "vae": {"block_out_channels": [32, 64, 128, 128], "layers_per_block": 1, "sample_size": 128, "scaling_factor": 0.5},
    "text_encoder": {"width": 256, "heads": 4, "layers": 4, "embed_dim": 256},
    "denoiser": {
        "kind": "unet",
        "block_out_channels": [128, 256, 256],
        "layers_per_block": 1,
        "attention_head_dim": 32,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "sample_size": 16,
    },
}


BENCH_SIZE = 256  # pixels a side for --sdxl and --sd3
TEXT_WIDTHS = (64, 128)  # their two CLIP text encoders (the second's pooled projection as wide)

# A small random SDXL-shaped model (two text encoders, pooled projection, size ids) for --sdxl.
BENCH_SDXL = {"unet_channels": (64, 128), "vae_channels": (32, 64, 64, 64)}

# A small random SD3-shaped model for --sd3: an MMDiT (patch 2, 4 joint blocks, 3 heads of 64)
# reading both CLIPs' tokens zero-padded to a T5-like joint width and their pooled projections
# side by side; a 16-channel VAE with SD3's shift and scaling factors; no T5 (diffusers allows).
BENCH_SD3 = {"layers": 4, "heads": 3, "head_dim": 64, "joint_width": 256, "vae_channels": (32, 64, 64, 64), "shift": 3.0}


def clip_pair(first_encoder) -> dict:
    """Two CLIP text encoders TEXT_WIDTHS wide with projections as wide (the first of class
    `first_encoder`, the second CLIPTextModelWithProjection) and CLIP's own tokenizers (the
    second pads with "!", as SDXL's and SD3's do); random weights."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from ldm.models.clip_tokenizer import clip_tokenizer

    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer(pad_token="!")

    def config(width):
        return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=4,
                              num_attention_heads=width // 64, max_position_embeddings=77, hidden_act="gelu", projection_dim=width)  # fmt: skip

    small, wide = TEXT_WIDTHS
    return dict(tokenizer=tokenizer, tokenizer_2=tokenizer_2, text_encoder=first_encoder(config(small)),
                text_encoder_2=CLIPTextModelWithProjection(config(wide)))  # fmt: skip


def bench_vae(channels, latent_channels: int, **factors):
    """A 4-level (8x) AutoencoderKL `channels` wide, random weights."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=channels, latent_channels=latent_channels, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=BENCH_SIZE, **factors)  # fmt: skip


def write_bench_sdxl(folder: Path) -> Path:
    """BENCH_SDXL as a diffusers StableDiffusionXLPipeline folder, built from diffusers' and
    transformers' classes (random weights, CLIP's own tokenizer)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    small, wide = TEXT_WIDTHS
    channels, time_embed = BENCH_SDXL["unet_channels"], 32
    unet = UNet2DConditionModel(
        sample_size=BENCH_SIZE // 8, layers_per_block=2, block_out_channels=channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=[c // 64 for c in channels], use_linear_projection=True, transformer_layers_per_block=(1, 2),
        cross_attention_dim=small + wide, addition_embed_type="text_time", addition_time_embed_dim=time_embed,
        projection_class_embeddings_input_dim=6 * time_embed + wide,
    )  # fmt: skip
    vae = bench_vae(BENCH_SDXL["vae_channels"], 4, scaling_factor=0.13025, force_upcast=True)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    StableDiffusionXLPipeline(unet=unet, vae=vae, scheduler=scheduler, **clip_pair(CLIPTextModel)).save_pretrained(folder, safe_serialization=True)
    return folder


def write_bench_sd3(folder: Path) -> Path:
    """BENCH_SD3 as a diffusers StableDiffusion3Pipeline folder without T5, built from
    diffusers' and transformers' classes (random weights, CLIP's own tokenizer)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    width = BENCH_SD3["heads"] * BENCH_SD3["head_dim"]
    transformer = SD3Transformer2DModel(
        sample_size=BENCH_SIZE // 8, patch_size=2, in_channels=16, out_channels=16, num_layers=BENCH_SD3["layers"],
        attention_head_dim=BENCH_SD3["head_dim"], num_attention_heads=BENCH_SD3["heads"], joint_attention_dim=BENCH_SD3["joint_width"],
        caption_projection_dim=width, pooled_projection_dim=sum(TEXT_WIDTHS), pos_embed_max_size=BENCH_SIZE // 8,
    )  # fmt: skip
    vae = bench_vae(BENCH_SD3["vae_channels"], 16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=BENCH_SD3["shift"]),
        text_encoder_3=None, tokenizer_3=None, **clip_pair(CLIPTextModelWithProjection),
    )  # fmt: skip
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


BENCH_FOLDERS = {"sdxl": write_bench_sdxl, "sd3": write_bench_sd3}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: a random mid-sized model, saved to a temp folder)")
    family = parser.add_mutually_exclusive_group()
    family.add_argument("--sdxl", action="store_true", help="without --model: a small random SDXL-shaped model (BENCH_SDXL) at 256 px")
    family.add_argument("--sd3", action="store_true", help="without --model: a small random SD3-shaped model (BENCH_SD3) at 256 px")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--sampler", help="default: the model's (dpm++2m; flow-euler for a flow model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--size", type=int, help="image side in pixels (default: the model's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="DTYPE[+channels-last][+compile]",
        help="another run of ours in the same alternation, e.g. bf16, fp32+channels-last, bf16+channels-last+compile "
        "(ldm.models.inference_speed); repeatable",
    )
    parser.add_argument("--only", choices=("ours", "theirs"), help=argparse.SUPPRESS)  # memory subprocess
    return parser.parse_args(argv)


def load(args):
    import torch

    from ldm.pipeline import Pipeline

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    return Pipeline.load(args.model, device=args.device, dtype=dtype)


def variant(args, spec: str):
    """A Pipeline loaded as --also SPEC says: its dtype, then the speedups named after it."""
    from ldm.models.inference_speed import speed_up

    dtype, *speedups = spec.split("+")
    unknown = set(speedups) - {"channels-last", "compile"}
    if dtype not in ("fp32", "fp16", "bf16") or unknown:
        raise SystemExit(f"--also {spec}: DTYPE[+channels-last][+compile] expected")
    pipe = load(argparse.Namespace(**{**vars(args), "dtype": dtype}))
    speed_up(pipe.components, channels_last="channels-last" in speedups, compile="compile" in speedups)
    return pipe


def family(pipe) -> str:
    """Which of diffusers' pipelines runs `pipe`'s model: "sd", "sdxl" or "sd3" (TWINS)."""
    from ldm.diffusion.backbones import backbone_of

    backbone = backbone_of(pipe.components.denoiser)
    if backbone.kind == "mmdit":
        return "sd3"
    return "sdxl" if getattr(backbone, "takes_time_ids", False) else "sd"


def no_text_encoders(count: int) -> dict:
    return {f"{part}{suffix}": None for part in ("text_encoder", "tokenizer") for suffix in ("", "_2", "_3")[:count]}


# Per family: diffusers' pipeline class, the name it gives the denoiser, its other arguments
# (no text encoders: it is handed the embeddings).
TWINS = {
    "sd": ("StableDiffusionPipeline", "unet", {**no_text_encoders(1), "safety_checker": None, "feature_extractor": None,
                                               "requires_safety_checker": False}),
    "sdxl": ("StableDiffusionXLPipeline", "unet", no_text_encoders(2)),
    "sd3": ("StableDiffusion3Pipeline", "transformer", no_text_encoders(3)),
}  # fmt: skip


def diffusers_twin(pipe, sampler):
    """diffusers' pipeline for `pipe`'s family on the same denoiser, VAE and scheduler."""
    import diffusers

    from ldm.diffusion.samplers import make_sampler

    class_name, denoiser_name, others = TWINS[family(pipe)]
    scheduler = make_sampler(sampler, pipe.components.scheduler_config).scheduler
    twin = getattr(diffusers, class_name)(**{denoiser_name: pipe.components.denoiser}, vae=pipe.components.vae, scheduler=scheduler, **others)
    twin.set_progress_bar_config(disable=True)
    return twin


def embeddings(pipe, size: int):
    """(cond, uncond) for our loop and the same tensors as diffusers' keyword arguments: an
    SDXL or SD3 model's pooled embeddings too, SDXL's size ids (A1111's defaults) and its
    empty negative as zeros (SD3 encodes the empty negative, as diffusers' SD3 pipeline does)."""
    import torch

    cond, uncond = pipe.encode_text(["a lake at dawn"]), pipe.encode_text([""])
    if family(pipe) == "sdxl":
        uncond = uncond.map(torch.zeros_like)
        ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=cond.tokens.dtype, device=cond.tokens.device)
        cond, uncond = cond.with_vector("time_ids", ids), uncond.with_vector("time_ids", ids)
    given = dict(prompt_embeds=cond.tokens, negative_prompt_embeds=uncond.tokens)
    if family(pipe) != "sd":
        given.update(pooled_prompt_embeds=cond.pooled, negative_pooled_prompt_embeds=uncond.pooled)
    return cond, uncond, given


def runners(pipe, args):
    """Two functions that each make one image (B, 3, H, W) in [0, 1] from the same inputs (text
    encoding excluded from both: diffusers is handed the embeddings)."""
    import torch

    from ldm.pipeline import SampleRequest, make_generators

    size = args.size or pipe.default_size
    context, uncond, given = embeddings(pipe, size)
    noise = torch.randn(pipe.latent_shape(1, size, size), generator=torch.Generator().manual_seed(0))
    twin = diffusers_twin(pipe, args.sampler)

    def ours():
        latents = pipe.sample(SampleRequest(context, uncond, noise, args.steps, args.cfg, args.sampler, make_generators([0]), progress=False))
        return (pipe.decode(latents) / 2 + 0.5).clamp(0, 1)  # as diffusers' image processor

    def theirs():
        return twin(
            **given,
            latents=noise.clone(),
            num_inference_steps=args.steps,
            guidance_scale=args.cfg,
            generator=make_generators([0]),
            height=size,
            width=size,
            output_type="pt",
        ).images

    return {"ours": ours, "theirs": theirs}


def calls_and_image(pipe, run):
    """How many times `run` calls the denoiser, and its image."""
    calls = []
    handle = pipe.components.denoiser.register_forward_hook(lambda *_: calls.append(1))
    image = run()
    handle.remove()
    return len(calls), image


# The largest difference between the two loops' images ([0, 1] pixels) that counts as the same
# image: float rounding of the same operations in another order, not a different computation.
AGREEMENT = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 1e-2}


def same_work(pipe, runs, dtype: str) -> tuple[int, float]:
    """The denoiser calls per image, which both loops must make as many of, and the largest
    pixel difference between their images (at most AGREEMENT[dtype])."""
    (ours, our_image), (theirs, their_image) = (calls_and_image(pipe, runs[name]) for name in ("ours", "theirs"))
    difference = (our_image.float().cpu() - their_image.float().cpu()).abs().max().item()
    if ours != theirs or difference > AGREEMENT[dtype]:
        raise SystemExit(f"the two loops differ: {ours} and {theirs} denoiser calls, images {difference:.1e} apart")
    return ours, difference


def timed(run, device) -> float:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory_mib(args, name: str) -> float:
    """CPU: max RSS of a subprocess that only loads and runs `name`; CUDA: allocator peak."""
    if args.device.startswith("cuda"):
        return float("nan")  # measured in-process, see main
    command = [sys.executable, __file__, "--only", name, "--model", args.model, "--device", args.device,
               "--dtype", args.dtype, "--sampler", args.sampler, "--steps", str(args.steps), "--cfg", str(args.cfg)]
    if args.size:
        command += ["--size", str(args.size)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["max_rss_mib"]


def cold_start(model: str, device: str) -> dict[str, float]:
    import shutil

    # The installed console script, as a user runs it (or the module, from a checkout).
    command = [shutil.which("ldm-generate")] if shutil.which("ldm-generate") else [sys.executable, "-m", "ldm.cli.generate"]
    times = {}
    start = time.perf_counter()
    subprocess.run([*command, "--help"], capture_output=True, check=True)
    times["ldm-generate --help"] = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([*command, "a lake at dawn", "--model", model, "--device", device, "--quiet",
                        "--out", f"{out}/x.png", "--seed", "0"], capture_output=True, check=True)
        times["ldm-generate one image (20 steps)"] = time.perf_counter() - start
    return times


def main(argv=None):
    args = parse_args(argv)
    import resource

    import torch
    from tqdm import tqdm

    from ldm.diffusion.samplers import default_sampler

    torch.set_grad_enabled(False)
    if args.model is None:
        from ldm.formats.model_folder import save_model
        from ldm.config import model_config_from_dict
        from ldm.models.components import build_components

        torch.manual_seed(0)
        shaped = "sdxl" if args.sdxl else "sd3" if args.sd3 else None
        if shaped:
            args.model, args.size = str(BENCH_FOLDERS[shaped](Path(tempfile.mkdtemp()) / f"bench-{shaped}")), args.size or BENCH_SIZE
        else:
            args.model = str(save_model(build_components(model_config_from_dict(BENCH_MODEL)), Path(tempfile.mkdtemp()) / "bench"))
    pipe = load(args)
    args.sampler = args.sampler or default_sampler(pipe.components.scheduler_config)
    runs = runners(pipe, args)
    if args.only:
        runs[args.only]()
        print(json.dumps({"max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return

    for spec in args.also:
        runs[f"ours {spec}"] = runners(variant(args, spec), args)["ours"]
    evaluations, difference = same_work(pipe, runs, args.dtype)
    times = {name: [] for name in runs}
    warm_up = {name: timed(runs[name], args.device) for name in runs}  # compiling happens here
    for _ in tqdm(range(args.repeats), desc="alternating runs", file=sys.stderr):
        for name in runs:
            times[name].append(timed(runs[name], args.device))
    peaks = {}
    for name in ("ours", "theirs"):  # the --also runs: time only
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            runs[name]()
            peaks[name] = torch.cuda.max_memory_allocated() / 2**20
        else:
            peaks[name] = peak_memory_mib(args, name)

    size = args.size or pipe.default_size
    print(f"# txt2img: {pipe.components.name}, {size}x{size}, {args.sampler}, {args.steps} steps, cfg {args.cfg}, "
          f"{args.device} {args.dtype}, {evaluations} denoiser calls per image (batch 2 with CFG), median of {args.repeats}")
    print(f"# the two images agree within {difference:.1e} ([0, 1] pixels; tolerance {AGREEMENT[args.dtype]:g})")
    twin_name = type(diffusers_twin(pipe, args.sampler)).__name__
    print("| loop | s / image | ms / denoiser call | ratio to diffusers | first image s | peak memory MiB |")
    print("|---|---|---|---|---|---|")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in runs:
        label = {"ours": f"ldm (ours) {args.dtype}", "theirs": f"diffusers {twin_name} {args.dtype}"}.get(name, f"ldm (ours) {name[5:]}")
        print(f"| {label} | {medians[name]:.3f} | {1000 * medians[name] / evaluations:.1f} | "
              f"{medians[name] / medians['theirs']:.3f} | {warm_up[name]:.1f} | {peaks.get(name, float('nan')):.0f} |")
    print(f"\nratio ours/theirs: {medians['ours'] / medians['theirs']:.3f}")
    print("\n| cold start | s |\n|---|---|")
    for name, seconds in cold_start(args.model, args.device).items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
