"""Stage `lcm` from a flow-matching teacher: the teacher's step is diffusers' flow Euler, the
student's consistency function is the x0 that FlowMatchLCMScheduler computes, `--sampler lcm`
on a flow student is that scheduler stepped by hand, and a tiny flow U-Net distils a few steps,
resumes exactly, exports and draws in 4 steps."""

import pytest
import torch
from test_lcm_stage import lcm_config
from tiny import build_tiny
from tiny_data import tiny_datasets

from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.denoiser import denoise_call
from ldm.training.loop import train

FLOW = {"prediction_type": "flow", "shift": 3.0, "timestep_sampling": "logit_normal"}
EMBEDDING = 32


def draws(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def flow_teacher(tmp_path_factory):
    from ldm.formats.model_folder import save_model

    return save_model(build_tiny(scheduler=FLOW), tmp_path_factory.mktemp("flow") / "flow-teacher")


def flow_solver(shift=3.0, skip=20):
    from ldm.diffusion.process import RectifiedFlow
    from ldm.training.flow_consistency import FlowSkippingSolver

    return FlowSkippingSolver(RectifiedFlow(shift=shift), skip)


def test_the_teachers_step_is_diffusers_flow_euler_over_the_shifted_grid():
    from diffusers import FlowMatchEulerDiscreteScheduler

    solver = flow_solver()
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    euler.set_timesteps(sigmas=(torch.arange(50, 0, -1) / 50).tolist())  # shifted by the scheduler
    assert torch.allclose(solver.levels.flip(0), euler.sigmas, atol=1e-6)  # s_50 = 1 ... s_1, then 0
    noisy, velocity = draws(2, 4, 8, 8), draws(2, 4, 8, 8, seed=1)
    for index in (0, 17, 49):  # from s_50, s_33 and s_1 (to clean)
        start = solver.timesteps[49 - index].repeat(2)  # our grid, from clean up
        euler._step_index = index
        theirs = euler.step(velocity, euler.timesteps[index], noisy).prev_sample
        previous = solver.previous(start)
        assert torch.allclose(previous, euler.sigmas[index + 1].repeat(2), atol=1e-6)
        assert torch.allclose(solver.ode_step(velocity, noisy, start, previous), theirs, atol=1e-6)


def test_the_consistency_function_is_flow_match_lcms_clean_estimate():
    """At its last step FlowMatchLCMScheduler returns its x0 = x - s v; f(x, 0) = x."""
    from diffusers import FlowMatchLCMScheduler

    solver = flow_solver()
    noisy, velocity = draws(1, 4, 8, 8), draws(1, 4, 8, 8, seed=1)
    for level in (1.0, 0.4, 0.02):
        lcm = FlowMatchLCMScheduler(shift=3.0)
        lcm.set_timesteps(sigmas=[level])  # one step: from shift(level) to 0
        theirs = lcm.step(velocity, lcm.timesteps[0], noisy).prev_sample
        assert torch.allclose(solver.boundary(velocity, noisy, lcm.sigmas[:1]), theirs, atol=1e-6)
    assert torch.equal(solver.boundary(velocity, noisy, torch.zeros(1)), noisy)


@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_lcm_on_a_flow_student_is_flow_match_lcm_stepped_by_hand(cfg):
    from diffusers import FlowMatchLCMScheduler, LatentConsistencyModelPipeline

    from ldm.pipeline import Pipeline, SampleRequest, make_generators

    components = build_tiny(scheduler=FLOW, unet__time_cond_proj_dim=EMBEDDING)
    pipe = Pipeline(components)
    cond = pipe.encode_text(["a lake at dawn", "a red boat"])
    noise = draws(2, 4, 16, 16, seed=3)
    ours = pipe.sample(SampleRequest(cond, None, noise, 4, cfg, "lcm", make_generators([10, 11]), progress=False))

    scheduler = FlowMatchLCMScheduler(shift=3.0)
    scheduler.set_timesteps(4)
    embedding = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, torch.full((2,), cfg - 1.0), embedding_dim=EMBEDDING)
    guided = Conditioning(cond.tokens, vectors={"guidance_embedding": embedding})
    x, generators = noise.clone(), make_generators([10, 11])
    with torch.no_grad():
        for t in scheduler.timesteps:
            velocity = denoise_call(components.denoiser, x, t.repeat(2), guided)
            x = scheduler.step(velocity, t, x, generator=generators).prev_sample
    assert (ours - x).abs().max().item() < 1e-5


def test_the_teacher_step_guides_the_velocity_per_sample(tmp_path, flow_teacher):
    from ldm.formats.model_folder import load_model
    from ldm.training.flow_consistency import FlowSkippingSolver
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    module = build_stage(StageContext(lcm_config(tmp_path, flow_teacher), torch.device("cpu"), tmp_path, tiny_datasets())).module
    assert isinstance(module.solver, FlowSkippingSolver)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(3, 4, 16, 16, generator=g)
    cond, uncond = (Conditioning(torch.randn(3, 77, 32, generator=g)) for _ in range(2))
    start, scale = module.solver.timesteps[torch.tensor([3, 20, 49])], torch.tensor([1.0, 3.0, 12.0])
    previous = module.solver.previous(start)
    teacher = load_model(flow_teacher).denoiser
    with torch.no_grad():
        ours = module.teacher_step(noisy, start, previous, cond, uncond, scale)
        v_u, v_c = (denoise_call(teacher, noisy, start * 1000, c) for c in (uncond, cond))  # the denoiser reads 1000 s
    s, step = scale[:, None, None, None], (previous - start)[:, None, None, None]
    assert torch.allclose(ours, noisy + step * (v_u + s * (v_c - v_u)), atol=5e-5)
    assert (ours[2] - (noisy + step * v_c)[2]).abs().max() > 1e-3  # the guidance shows


def test_a_flow_teacher_distils_resumes_exactly_exports_and_draws_in_4_steps(tmp_path, flow_teacher):
    from diffusers import FlowMatchLCMScheduler

    from ldm.formats.model_folder import read_safetensors
    from ldm.pipeline import Pipeline
    from ldm.training.checkpoints import resolve_checkpoint

    def run(folder, steps, resume=None):
        config = lcm_config(folder, flow_teacher, max_steps=steps, ema_decay=0.9, lcm={"sample_steps": 4, "sample_cfg": 3.0})
        return train(config, resume=resume, open_dataset=tiny_datasets())

    straight = run(tmp_path / "a", 4)
    assert all(torch.isfinite(torch.tensor(straight.losses)))
    run(tmp_path / "b", 2)
    resumed = run(tmp_path / "b", 4, resume=resolve_checkpoint("latest", tmp_path / "b" / "run"))
    assert resumed.losses == straight.losses[2:]  # the target network resumed too
    a, b = (read_safetensors(r.export_path / "denoiser.safetensors") for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    pipe = Pipeline.load(straight.export_path)
    calls = []
    hook = pipe.components.denoiser.register_forward_hook(lambda *args: calls.append(1))
    try:
        generated = pipe.generate("red", seed=0, progress=False)
    finally:
        hook.remove()
    fields = generated.parameters[0].fields()
    assert (fields["Sampler"], fields["Steps"], fields["CFG scale"]) == ("lcm", "4", "3")
    assert len(calls) == 4  # one conditional call per step: cfg is the embedding's
    assert pipe.components.scheduler_config["prediction_type"] == "flow_prediction"
    assert type(make_lcm(pipe).scheduler) is FlowMatchLCMScheduler


def make_lcm(pipe):
    from ldm.diffusion.samplers import make_sampler

    return make_sampler("lcm", pipe.components.scheduler_config)


def test_the_flow_distillation_loss_falls(tmp_path, flow_teacher):
    result = train(lcm_config(tmp_path, flow_teacher, max_steps=30, lr=2e-3), open_dataset=tiny_datasets())
    first, last = sum(result.losses[:6]) / 6, sum(result.losses[-6:]) / 6
    assert last < 0.8 * first, (first, last)


def test_an_lcm_lora_of_a_flow_teacher_samples_with_lcm_on_it(tmp_path, flow_teacher):
    from ldm.formats.model_folder import load_model
    from ldm.formats.single_file import read_metadata
    from ldm.lora.apply import apply_loras
    from ldm.pipeline import Pipeline, SampleRequest, make_generators

    result = train(lcm_config(tmp_path, flow_teacher, lcm={"lora_rank": 2}, max_steps=2, lr=1e-2), open_dataset=tiny_datasets())
    components = load_model(flow_teacher)
    pipe = Pipeline(components)
    cond, noise = pipe.encode_text(["a lake"]), draws(1, 4, 16, 16)

    def sample():
        return pipe.sample(SampleRequest(cond, None, noise, 4, 1.0, "lcm", make_generators([3]), progress=False))

    base = sample()
    apply_loras(components, [(result.export_path, 1.0)])
    assert torch.isfinite(base).all() and (sample() - base).abs().max().item() > 1e-4
    # The file says it is a flow LCM-LoRA: an eps/v model refuses it (ldm.lora.parameterisation).
    assert read_metadata(result.export_path)["ldm_prediction_type"] == "flow"
