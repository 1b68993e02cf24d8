"""Stage `lora` on a tiny flow-matching MMDiT (SD3's transformer): adapters on the joint
attention (and feed-forward, targets: all) that start as the base model, train alone with the
flow objective, resume exactly, and export a diffusers-layout SD3 LoRA (transformer.*) that our
loader and diffusers' StableDiffusion3Pipeline.load_lora_weights apply alike and ldm-generate
draws with; a flow LoRA on an eps model, a kohya layout for an MMDiT and a DiT are one line."""

import copy

import pytest
import torch
from safetensors import safe_open

from flow_mmdit import adapting_config, save_flow_mmdit
from in_process import run_in_process
from tiny import build_tiny
from tiny_data import tiny_datasets

from ldm.config import ConfigError
from ldm.formats.model_folder import load_model, save_model
from ldm.training.checkpoints import load_checkpoint, resolve_checkpoint
from ldm.training.loop import train

ATTENTION = {"to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"}
FEED_FORWARD = {"ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"}


def mmdit_lora_config(output_dir, init_from, backbone="mmdit", **lora):
    section = {"init_from": init_from, "rank": 2, "alpha": 4.0, "dtype": "fp32", **lora}
    return adapting_config("lora", output_dir, section, backbone, lr=1e-2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny flow MMDiT model folder (the LoRAs adapt it; only read)."""
    return save_flow_mmdit(tmp_path_factory.mktemp("mmdit-base") / "model")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base):
    """An uninterrupted 4-step run with targets: all (its export is the LoRA file)."""
    return train(mmdit_lora_config(tmp_path_factory.mktemp("mmdit-lora") / "run", base, targets="all"), open_dataset=tiny_datasets())


def stage_for(config, folder):
    from ldm.training.stage_registry import build_stage
    from ldm.training.stages import StageContext

    return build_stage(StageContext(config, torch.device("cpu"), folder, tiny_datasets()))


def transformer_output(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents, tokens, pooled = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 32, generator=g), torch.randn(2, 16, generator=g)
    with torch.no_grad():
        return transformer(hidden_states=latents, encoder_hidden_states=tokens, pooled_projections=pooled,
                           timestep=torch.tensor([100.0, 700.0]), return_dict=False)[0]  # fmt: skip


def adapted_modules(names) -> set[str]:
    """`transformer_blocks.N.<module>` -> module, for adapter parameter names and file keys."""
    return {name.split("transformer_blocks.")[1].split(".", 1)[1].split(".lora_")[0].removeprefix("attn.") for name in names}


def test_at_step_zero_the_attention_adapters_change_nothing_and_only_they_train(tmp_path, base):
    stage = stage_for(mmdit_lora_config(tmp_path / "run", base), tmp_path)
    trained = [name for name, p in stage.module.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in name or ".lora_B." in name for name in trained)
    assert adapted_modules(trained) == ATTENTION
    assert torch.equal(transformer_output(stage.module.denoiser), transformer_output(load_model(base).denoiser))


def test_the_file_is_diffusers_sd3_layout_and_applies_as_trained_in_ours_and_diffusers(trained, tmp_path, base):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from ldm.lora.apply import apply_loras

    assert len(trained.losses) == 4 and all(torch.isfinite(torch.tensor(trained.losses)))
    with safe_open(str(trained.export_path), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    assert all(key.startswith("transformer.transformer_blocks.") for key in keys)
    assert "transformer.transformer_blocks.0.attn.to_q.lora_A.weight" in keys
    assert adapted_modules(keys) == ATTENTION | FEED_FORWARD
    assert (metadata["ldm_layout"], metadata["ldm_prediction_type"]) == ("peft", "flow")

    stage = stage_for(mmdit_lora_config(tmp_path / "x", base, targets="all"), tmp_path / "x")
    stage.module.load_state_dict(load_checkpoint(resolve_checkpoint("latest", trained.export_path.parent)).weights, strict=False)
    as_trained = transformer_output(stage.module.denoiser)

    components = load_model(base)
    transformer = copy.deepcopy(components.denoiser)
    untouched = transformer_output(components.denoiser)
    apply_loras(components, [(trained.export_path, 1.0)])
    ours = transformer_output(components.denoiser)
    assert (as_trained - untouched).abs().max() > 1e-3  # the flow steps moved the adapters
    assert (ours - as_trained).abs().max() < 1e-5

    parts = dict.fromkeys(["vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3"])
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), **parts)
    pipe.load_lora_weights(str(trained.export_path), adapter_name="trained")
    assert (transformer_output(pipe.transformer) - as_trained).abs().max() < 1e-5


def test_resume_continues_as_if_never_stopped(trained, tmp_path, base):
    config = mmdit_lora_config(tmp_path / "run", base, targets="all")
    config.train.max_steps = 2
    train(config, open_dataset=tiny_datasets())
    config.train.max_steps = 4
    resumed = train(config, resume=resolve_checkpoint("latest", tmp_path / "run"), open_dataset=tiny_datasets())
    assert resumed.losses == trained.losses[2:]
    with safe_open(str(trained.export_path), framework="pt") as a, safe_open(str(resumed.export_path), framework="pt") as b:
        assert set(a.keys()) == set(b.keys()) and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_ldm_generate_draws_with_the_lora(trained, tmp_path, base):
    from PIL import Image

    from ldm.cli.generate import main as generate_main

    drawn = {}
    for name, extra in (("base", []), ("lora", ["--lora", trained.export_path])):
        out = tmp_path / f"{name}.png"
        args = ["a red circle", "--model", base, "--steps", "2", "--seed", "1", "--sampler", "flow-euler", "--out", out, "--quiet", *extra]
        result = run_in_process("ldm-generate", generate_main, *args)
        assert result.returncode == 0, result.stderr
        drawn[name] = Image.open(out)
    assert drawn["lora"].size == (32, 32) and drawn["lora"].tobytes() != drawn["base"].tobytes()


def test_a_flow_lora_on_an_eps_model_is_one_line(trained, tmp_path):
    eps = save_model(build_tiny(denoiser="mmdit"), tmp_path / "eps")
    out = tmp_path / "x.png"
    args = ["a lake", "--model", eps, "--lora", trained.export_path, "--steps", "1", "--out", out, "--quiet"]
    from ldm.cli.generate import main as generate_main

    result = run_in_process("ldm-generate", generate_main, *args)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.strip().endswith("this LoRA was trained for flow matching (velocity); this model predicts eps (noise)")
    assert not out.exists()


def test_a_kohya_layout_for_an_mmdit_is_one_line(tmp_path, base):
    with pytest.raises(ConfigError, match=r"^lora.layout kohya is not written for an MMDiT; its LoRAs take diffusers' layout \(lora.layout: peft\)$"):
        train(mmdit_lora_config(tmp_path / "run", base, layout="kohya"), open_dataset=tiny_datasets())


def test_a_lora_on_a_dit_is_refused_in_one_line(tmp_path):
    dit = save_model(build_tiny(denoiser="dit"), tmp_path / "dit")
    with pytest.raises(ConfigError, match="^stage lora trains LoRAs for U-Net and MMDiT models; this model's denoiser is a DiT$"):
        train(mmdit_lora_config(tmp_path / "run", dit, backbone="dit"), open_dataset=tiny_datasets())
