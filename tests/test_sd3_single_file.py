"""SD3 single files in Stability's original layout: the MMDiT's names against diffusers' own
conversion; ldm-convert writes a file from an SD3 folder that diffusers' from_single_file reads
as the folder, we read a file (alone, or completed by a folder named in its sidecar) as
diffusers does, a file converts back to a folder; what does not fit is one line, exit 2."""

import pytest
import torch
from reference import LastLatents
from safetensors.torch import load_file, save_file
from sd3_shaped_folder import write_sd3_shaped_folder

from ldm.cli.convert import main as convert
from ldm.formats.mmdit_layout import mmdit_from_original, mmdit_to_original
from ldm.formats.model_folder import ModelError, load_model
from ldm.pipeline import Pipeline, make_generators

STEPS = 3
PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
T5_KEYS = "text_encoders.t5xxl."


@pytest.mark.parametrize("options", [{}, {"dual_attention_layers": (0,), "qk_norm": "rms_norm"}])  # SD3, SD3.5
def test_the_mmdit_names_are_the_ones_diffusers_converts(options):
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    torch.manual_seed(0)
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16,
                                  pooled_projection_dim=8, pos_embed_max_size=8, **options)  # fmt: skip
    state = {k: torch.randn_like(v) for k, v in model.state_dict().items()}  # no zero or constant rows to hide a swap
    original = mmdit_to_original(state, 3)
    assert "model.diffusion_model.joint_blocks.2.context_block.adaLN_modulation.1.weight" in original
    theirs = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
    ours = mmdit_from_original(original)
    for back in (theirs, ours):
        assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return write_sd3_shaped_folder(tmp_path_factory.mktemp("sd3-shaped"), t5=True)


@pytest.fixture(scope="module")
def sd3_files(sd3_folder, tmp_path_factory):
    """ldm-convert's file of the folder (T5 in it: its sidecar names the folder for T5's
    tokenizer), and the same file without T5, which reads alone."""
    root = tmp_path_factory.mktemp("sd3-file")
    full, alone = root / "sd3-t5.safetensors", root / "sd3.safetensors"
    assert convert([str(sd3_folder), str(full)]) == 0
    full.with_suffix(".yaml").write_text(f"parts_from: {sd3_folder}\n")
    save_file({k: v for k, v in load_file(str(full)).items() if not k.startswith(T5_KEYS)}, str(alone))
    return {"t5": full, "alone": alone}


@pytest.fixture(scope="module")
def diffusers_from_file(sd3_folder, sd3_files):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_single_file(str(sd3_files["t5"]), config=str(sd3_folder), local_files_only=True)
    pipe.text_encoder_3.eval()  # from_single_file leaves the T5 it builds in training mode (dropout on)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_folder(path):
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(path, local_files_only=True, use_safetensors=True)


def assert_same_weights(first, second, parts=PARTS):
    for name in parts:
        a, b = getattr(first, name).state_dict(), getattr(second, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_the_file_uses_the_original_key_names(sd3_files):
    keys = set(load_file(str(sd3_files["t5"])))
    expected = {
        "model.diffusion_model.joint_blocks.1.x_block.attn.qkv.weight",
        "model.diffusion_model.final_layer.adaLN_modulation.1.weight",
        "model.diffusion_model.pos_embed",
        "first_stage_model.decoder.up.1.block.0.conv1.weight",
        "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "text_encoders.clip_g.transformer.text_projection.weight",
        "text_encoders.t5xxl.transformer.shared.weight",
    }
    assert expected - keys == set()
    assert not any(k.startswith(("transformer.", "text_encoder.", "vae.")) for k in keys)


def test_diffusers_reads_our_file_as_the_folder(sd3_folder, diffusers_from_file):
    assert_same_weights(diffusers_from_file, diffusers_folder(sd3_folder))


def generate(pipe, latents: LastLatents):
    pipe.generate("a lake at dawn", negative="blurry", n=2, steps=STEPS, cfg=5.0, seed=7, width=32, height=48, callback=latents,
                  progress=False, prompt_syntax="plain")  # fmt: skip


def diffusers_latents(pipe, **parts):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(**{**pipe.components, **parts})
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt=["a lake at dawn"] * 2, negative_prompt=["blurry"] * 2, num_inference_steps=STEPS, guidance_scale=5.0,
                generator=make_generators([7, 8]), width=32, height=48, output_type="latent").images  # fmt: skip


@pytest.mark.parametrize("file", ["alone", "t5"])
def test_we_read_a_file_as_diffusers_does(sd3_files, diffusers_from_file, file):
    """Alone (no T5: its tokens are zeros), and with T5 completed by the folder its sidecar names."""
    last = LastLatents()
    generate(Pipeline.load(sd3_files[file]), last)
    without_t5 = {"text_encoder_3": None, "tokenizer_3": None} if file == "alone" else {}
    assert (last.latents - diffusers_latents(diffusers_from_file, **without_t5)).abs().max().item() < 1e-4


def test_a_file_converts_back_to_a_folder(sd3_folder, sd3_files, diffusers_from_file, tmp_path):
    target = tmp_path / "back"
    assert convert([str(sd3_files["t5"]), str(target)]) == 0
    back = diffusers_folder(target)
    assert_same_weights(back, diffusers_from_file)
    assert back.tokenizer_2.pad_token == "!" and back.scheduler.config.shift == 3.0
    loaded = load_model(target)
    assert len(loaded.text_encoders) == 3 and loaded.scheduler_config["prediction_type"] == "flow_prediction"


def test_a_file_without_its_text_encoders_names_what_to_pass(sd3_files, tmp_path, capsys):
    error = refused(capsys, {k: v for k, v in load_file(str(sd3_files["alone"])).items() if not k.startswith("text_encoders.")}, tmp_path)
    assert "holds no text_encoders.clip_l.transformer.* or text_encoders.clip_g.transformer.*" in error
    assert "in.yaml (parts_from: DIR)" in error


def test_a_file_with_t5_and_no_sidecar_is_one_line(sd3_files, tmp_path, capsys):
    assert "holds a T5 encoder, whose tokenizer no file carries" in refused(capsys, load_file(str(sd3_files["t5"])), tmp_path)


def test_a_damaged_sd3_file_is_one_line(sd3_files, tmp_path, capsys):
    state = load_file(str(sd3_files["alone"]))
    del state["model.diffusion_model.context_embedder.weight"]
    assert "cannot read the SD3 architecture from its weights" in refused(capsys, state, tmp_path)


def refused(capsys, state: dict, tmp_path) -> str:
    """ldm-convert's one-line refusal of a file holding `state`; nothing is written."""
    source, target = tmp_path / "in.safetensors", tmp_path / "out"
    save_file(state, str(source))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        convert([str(source), str(target)])
    error = capsys.readouterr().err.strip()
    assert exit.value.code == 2 and len(error.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]
    with pytest.raises(ModelError):
        load_model(source)
    return error
