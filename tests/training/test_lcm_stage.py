"""Stage `lcm`: a student that starts as the teacher exactly, whose distillation loss falls,
that resumes exactly (target network included), and whose export samples with --sampler lcm
by its own defaults. The solver and scalings are checked against diffusers' schedulers."""

import pytest
import torch
from PIL import Image
from tiny_data import tiny_datasets

from configs import tiny_train_dict
from ldm.config import ConfigError, from_dict
from ldm.diffusion.conditioning import Conditioning
from ldm.training.config import TrainConfig
from ldm.training.loop import train


def lcm_config(tmp_path, init_from, lcm=None, validation=None, **train_settings):
    data = tiny_train_dict("lcm", tmp_path / "run", **train_settings)
    data["lcm"] = {"init_from": str(init_from), "guidance_embedding": 32, **(lcm or {})}
    if validation:
        data["validation"] = validation
    return from_dict(TrainConfig, data)


def build_lcm_stage(tmp_path, init_from):
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    return build_stage(StageContext(lcm_config(tmp_path, init_from), torch.device("cpu"), tmp_path, tiny_datasets()))


def test_at_step_zero_the_student_is_the_teacher(tmp_path, tiny_model_dir):
    from ldm.diffusion.denoiser import denoise_call
    from ldm.diffusion.guidance import guidance_scale_embedding

    stage = build_lcm_stage(tmp_path, tiny_model_dir)
    module = stage.module
    g = torch.Generator().manual_seed(0)
    latents, context = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 32, generator=g)
    timesteps, embedding = torch.tensor([19, 799]), guidance_scale_embedding(torch.tensor([2.0, 11.0]), 32)
    with torch.no_grad():
        student = denoise_call(module.denoiser, latents, timesteps, Conditioning(context, vectors={"guidance_embedding": embedding}))
        teacher = denoise_call(module.teacher[0], latents, timesteps, Conditioning(context))
    assert torch.equal(student, teacher)
    assert module.denoiser.config.time_cond_proj_dim == 32 and module.teacher[0].config.time_cond_proj_dim is None
    assert {name.split(".")[0] for name, p in module.named_parameters() if p.requires_grad} == {"denoiser"}


def test_the_student_trains_on_the_embedding_its_cfg_gets_at_sampling(tmp_path, tiny_model_dir):
    """A guidance scale s is embedded as w = s - 1 on both sides (diffusers' LCM pipeline), not s."""
    from diffusers import LatentConsistencyModelPipeline

    from ldm.data.batches import collate_samples
    from ldm.diffusion.guidance import GuidedModel
    from ldm.training.batches import Randomness
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    config = lcm_config(tmp_path, tiny_model_dir, lcm={"cfg_min": 6.0, "cfg_max": 6.0})
    module = build_stage(StageContext(config, torch.device("cpu"), tmp_path, tiny_datasets())).module
    images = tiny_datasets()("train")
    embeddings = []
    hook = module.denoiser.register_forward_pre_hook(lambda _, args, kwargs: embeddings.append(kwargs["timestep_cond"]), with_kwargs=True)
    try:
        module(collate_samples([images[0], images[1]]), Randomness(0, 0, 0), 0)
    finally:
        hook.remove()
    (trained,) = embeddings  # the student's one call (teacher and target are other modules)
    sampled = GuidedModel(module.denoiser, Conditioning(torch.zeros(2, 77, 32)), None, 6.0).cond.vectors["guidance_embedding"]
    diffusers = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, torch.tensor([5.0, 5.0]), embedding_dim=32)
    assert torch.equal(trained, sampled) and torch.equal(trained, diffusers)


def test_the_distillation_loss_falls(tmp_path, tiny_model_dir):
    result = train(lcm_config(tmp_path, tiny_model_dir, max_steps=40, save_every=40, lr=2e-3), open_dataset=tiny_datasets())
    first, last = sum(result.losses[:8]) / 8, sum(result.losses[-8:]) / 8
    assert last < 0.7 * first, (first, last)


def test_resume_continues_as_if_never_stopped(tmp_path, tiny_model_dir):
    """The target network is part of the state: rebuilt from the student instead, the losses after resume differ."""
    from ldm.formats.model_folder import read_safetensors
    from ldm.training.checkpoints import resolve_checkpoint

    straight = train(lcm_config(tmp_path / "a", tiny_model_dir, max_steps=4, ema_decay=0.9), open_dataset=tiny_datasets())
    train(lcm_config(tmp_path / "b", tiny_model_dir, max_steps=2, ema_decay=0.9), open_dataset=tiny_datasets())
    checkpoint = resolve_checkpoint("latest", tmp_path / "b" / "run")
    assert (checkpoint / "stage.safetensors").is_file()
    resumed = train(lcm_config(tmp_path / "b", tiny_model_dir, max_steps=4, ema_decay=0.9), resume=checkpoint, open_dataset=tiny_datasets())
    assert resumed.losses == straight.losses[2:]
    a, b = (read_safetensors(r.export_path / "denoiser.safetensors") for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_export_samples_with_lcm_by_its_own_defaults(tmp_path, tiny_model_dir):
    from ldm.pipeline import Pipeline

    validation = {"prompts": ["red over blue"], "cfg": 4.0}
    result = train(lcm_config(tmp_path, tiny_model_dir, max_steps=2, validation=validation, lcm={"sample_steps": 3, "sample_cfg": 2.5}),
                   open_dataset=tiny_datasets())  # fmt: skip
    grid = Image.open(tmp_path / "run" / "samples" / "step-000002.png")
    assert grid.size == (4 * 32, 32)  # 1, 2, 4 and 8 steps
    pipe = Pipeline.load(result.export_path)
    assert pipe.components.denoiser.config.time_cond_proj_dim == 32
    calls = []
    hook = pipe.components.denoiser.register_forward_hook(lambda *args: calls.append(1))
    try:
        generated = pipe.generate("red", seed=0, progress=False)
    finally:
        hook.remove()
    assert len(calls) == 3  # sample_steps, one call each: cfg goes into the embedding
    fields = generated.parameters[0].fields()
    assert (fields["Sampler"], fields["Steps"], fields["CFG scale"]) == ("lcm", "3", "2.5")
    assert fields["Model"] == f"{Pipeline.load(tiny_model_dir).components.config.name}-lcm"  # not the teacher's name


def test_solver_is_ddim_and_scalings_are_lcm_schedulers():
    from diffusers import DDIMScheduler, LCMScheduler

    from ldm.training.consistency import SkippingSolver, boundary_scalings, clean_and_noise

    config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000}
    lcm = LCMScheduler(**config)
    lcm.set_timesteps(50)
    solver = SkippingSolver(lcm.alphas_cumprod, 20)
    assert solver.timesteps.tolist() == sorted(lcm.timesteps.tolist())
    for t in (0, 19, 499, 999):
        c_skip, c_out = boundary_scalings(torch.tensor([t]), 10.0)
        expected = lcm.get_scalings_for_boundary_condition_discrete(torch.tensor(t))
        assert torch.allclose(c_skip.flatten(), torch.as_tensor(expected[0]).float()) and torch.allclose(c_out.flatten(), torch.as_tensor(expected[1]).float())

    ddim = DDIMScheduler(**config, set_alpha_to_one=False, timestep_spacing="leading", steps_offset=0, clip_sample=False)
    ddim.set_timesteps(50)
    g = torch.Generator().manual_seed(0)
    noisy, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    t = torch.tensor([500])
    x0, same_eps = clean_and_noise(eps, noisy, solver.alpha_bar(t, "cpu"), "epsilon")
    ours = solver.step(x0, same_eps, solver.previous(t))
    theirs = ddim.step(eps, 500, noisy, eta=0.0).prev_sample
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_a_dit_teacher_is_a_one_line_error(tmp_path):
    from ldm.formats.model_folder import save_model
    from tiny import build_tiny

    folder = save_model(build_tiny(denoiser="dit"), tmp_path / "dit-model")
    with pytest.raises(ConfigError, match="stage lcm distils a U-Net teacher"):
        build_lcm_stage(tmp_path, folder)


@pytest.mark.parametrize(("section", "message"), [
    ({"init_from": None}, "lcm.init_from is required"),
    ({"skip": 30}, "lcm.skip must divide the schedule's 1000 timesteps, got 30"),
    ({"cfg_min": 8.0, "cfg_max": 4.0}, "1 <= cfg_min <= cfg_max, got 8.0, 4.0"),
    ({"target_ema_decay": 1.0}, r"lcm.target_ema_decay must be in \[0, 1\), got 1.0"),
    ({"huber_c": 0}, "lcm.huber_c must be positive"),
])  # fmt: skip
def test_bad_lcm_sections_are_config_errors(tmp_path, section, message):
    with pytest.raises(ConfigError, match=message):
        lcm_config(tmp_path, "model", lcm=section)


@pytest.fixture
def backbone() -> str:
    """LCM students carry a guidance embedding: a U-Net thing."""
    return "unet"


@pytest.fixture
def tiny_model_dir(shared_tiny_model_dir):
    """Only read here (the students start from it): one folder per session."""
    return shared_tiny_model_dir


def test_the_teacher_may_be_a_built_in_model_by_name(tmp_path):
    from ldm.builtin_models import is_installed
    from ldm.training.config import Text2ImgSection
    from ldm.training.text2img_stage import load_frozen_parts

    if not is_installed("scenes"):
        pytest.skip("this install carries no built-in model")
    config = lcm_config(tmp_path, "scenes")
    components = load_frozen_parts(config, Text2ImgSection(init_from=config.lcm.init_from))
    assert config.model.name == "scenes" and components.denoiser.config.block_out_channels == (64, 128, 128)


def test_lcm_lora_starts_as_the_teacher_and_trains_only_adapters(tmp_path, tiny_model_dir):
    from ldm.diffusion.denoiser import denoise_call
    from ldm.formats.model_folder import load_model
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    config = lcm_config(tmp_path, tiny_model_dir, lcm={"lora_rank": 2})
    stage = build_stage(StageContext(config, torch.device("cpu"), tmp_path, tiny_datasets()))
    g = torch.Generator().manual_seed(0)
    latents, context, timesteps = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 32, generator=g), torch.tensor([19, 799])
    with torch.no_grad():
        student = denoise_call(stage.module.denoiser, latents, timesteps, Conditioning(context))
        teacher = denoise_call(load_model(tiny_model_dir).denoiser, latents, timesteps, Conditioning(context))
    assert torch.equal(student, teacher)
    trained = [name for name, p in stage.module.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in name or ".lora_B." in name for name in trained)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_lcm_lora_file_samples_as_diffusers_with_it_loaded(tmp_path, tiny_model_dir, steps):
    """LCM-LoRA in diffusers: the SD pipeline with LCMScheduler and the LoRA loaded."""
    from diffusers import StableDiffusionPipeline
    from reference import diffusers_pipeline

    from ldm.lora.apply import apply_loras
    from ldm.formats.model_folder import load_model
    from ldm.pipeline import Pipeline, SampleRequest, make_generators

    result = train(lcm_config(tmp_path, tiny_model_dir, lcm={"lora_rank": 2}, max_steps=2, lr=1e-2), open_dataset=tiny_datasets())
    assert result.export_path.name == "lcm-lora.safetensors"
    components = load_model(tiny_model_dir)
    reference = diffusers_pipeline(StableDiffusionPipeline, load_model(tiny_model_dir), "lcm")
    pipe = Pipeline(components)
    context = pipe.encode_text(["a lake at dawn"])
    noise = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(1))
    base = pipe.sample(SampleRequest(context, None, noise, steps, 1.0, "lcm", make_generators([3]), progress=False))
    apply_loras(components, [(result.export_path, 1.0)])
    ours = pipe.sample(SampleRequest(context, None, noise, steps, 1.0, "lcm", make_generators([3]), progress=False))
    reference.load_lora_weights(str(result.export_path), adapter_name="lcm")
    theirs = reference(prompt_embeds=context.tokens, latents=noise.clone(), num_inference_steps=steps, guidance_scale=1.0,
                       generator=make_generators([3]), height=32, width=32, output_type="latent").images  # fmt: skip
    assert (ours - base).abs().max().item() > 1e-3
    assert (ours - theirs).abs().max().item() < 1e-4


def test_lcm_lora_resumes_exactly(tmp_path, tiny_model_dir):
    from ldm.formats.model_folder import read_safetensors
    from ldm.training.checkpoints import resolve_checkpoint

    settings = dict(lcm={"lora_rank": 2})
    straight = train(lcm_config(tmp_path / "a", tiny_model_dir, max_steps=4, **settings), open_dataset=tiny_datasets())
    train(lcm_config(tmp_path / "b", tiny_model_dir, max_steps=2, **settings), open_dataset=tiny_datasets())
    resumed = train(lcm_config(tmp_path / "b", tiny_model_dir, max_steps=4, **settings),
                    resume=resolve_checkpoint("latest", tmp_path / "b" / "run"), open_dataset=tiny_datasets())  # fmt: skip
    assert resumed.losses == straight.losses[2:]
    a, b = read_safetensors(straight.export_path), read_safetensors(resumed.export_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("lora_rank", [None, 2])
def test_the_teacher_step_guides_x0_and_eps_per_sample(tmp_path, tiny_model_dir, lora_rank):
    """Through GuidedModel (guiding the teacher's output) it is the step that guides x0 and eps
    of the two passes, each sample at its own scale: they are affine in the output."""
    from ldm.diffusion.denoiser import denoise_call
    from ldm.formats.model_folder import load_model
    from ldm.training.consistency import clean_and_noise
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    config = lcm_config(tmp_path, tiny_model_dir, lcm={"lora_rank": lora_rank} if lora_rank else None)
    module = build_stage(StageContext(config, torch.device("cpu"), tmp_path, tiny_datasets())).module
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(3, 4, 16, 16, generator=g)
    cond, uncond = (Conditioning(torch.randn(3, 77, 32, generator=g)) for _ in range(2))
    start, scale = torch.tensor([199, 499, 979]), torch.tensor([1.0, 3.0, 12.0])
    previous = module.solver.previous(start)
    teacher = load_model(tiny_model_dir).denoiser
    with torch.no_grad():
        ours = module.teacher_step(noisy, start, previous, cond, uncond, scale)
        alpha_bar = module.solver.alpha_bar(start, "cpu")
        (x0_u, eps_u), (x0_c, eps_c) = (
            clean_and_noise(denoise_call(teacher, noisy, start, c), noisy, alpha_bar, module.prediction_type) for c in (uncond, cond)
        )
    s = scale[:, None, None, None]
    expected = module.solver.step(x0_u + s * (x0_c - x0_u), eps_u + s * (eps_c - eps_u), previous)
    assert torch.allclose(ours, expected, atol=5e-5), (ours - expected).abs().max()
    assert (ours[2] - module.solver.step(x0_c, eps_c, previous)[2]).abs().max() > 1e-3  # the guidance shows
