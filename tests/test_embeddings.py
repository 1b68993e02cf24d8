"""Textual-inversion embeddings in AUTOMATIC1111's files, used by writing the file's name in a prompt."""

import re

import pytest
import torch
from safetensors.torch import save_file

from ldm.lora.embedding_files import EmbeddingFileError, read_embedding_file
from ldm.lora.embeddings import catalog, request_embeddings
from ldm.lora.refs import file_hash
from ldm.models.prompt_embeddings import PromptEmbeddings
from ldm.pipeline import Pipeline
from ldm.png_info import parse_parameters
from ldm.settings import GenerationError

WIDTH = 32  # the tiny model's text encoder
FAST = {"seed": 3, "steps": 2, "cfg": 5.0, "sampler": "ddim", "progress": False}


@pytest.fixture
def backbone() -> str:
    return "unet"  # the text side is the same for both backbones


def vectors(n, width=WIDTH, seed=0):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def save_pt(data, path):
    torch.save(data, str(path))
    return path


def a1111_pt(rows, path, step=120):
    """The layout AUTOMATIC1111's own training writes."""
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": rows}, "name": path.stem, "step": step,
            "sd_checkpoint": "0123456789", "sd_checkpoint_name": "sd15"}  # fmt: skip
    return save_pt(data, path)


def encoded(components, prompts, embeddings=None):
    components.conditioner.embeddings = embeddings
    try:
        with torch.no_grad():
            return components.conditioner(prompts).tokens
    finally:
        components.conditioner.embeddings = None


@pytest.mark.parametrize("layout", ["string_to_param", "emb_params", "diffusers_bin", "plain_pt"])
def test_each_layout_reads_as_its_vectors(tmp_path, layout):
    rows = vectors(3)
    if layout == "string_to_param":
        path = a1111_pt(rows, tmp_path / "style.pt")
    elif layout == "emb_params":  # kohya's safetensors
        path = tmp_path / "style.safetensors"
        save_file({"emb_params": rows}, str(path))
    elif layout == "diffusers_bin":  # learned_embeds.bin: one vector under its token
        rows = rows[:1]
        path = save_pt({"<style>": rows[0]}, tmp_path / "style.bin")
    else:
        path = save_pt({"anything": rows}, tmp_path / "style.pt")
    read = read_embedding_file(path)
    assert read.name == "style" and read.vectors == len(rows) and read.shape == WIDTH
    assert torch.equal(read.tensors[""], rows)
    if layout == "string_to_param":
        assert (read.step, read.sd_checkpoint, read.sd_checkpoint_name) == (120, "0123456789", "sd15")


def test_the_encoder_reads_a_prompt_without_names_exactly_as_before(tiny_components):
    """The spliced tokenization is the encoder's own (marks, cut at 77, padding) where no name stands."""
    encoder = tiny_components.first_text_encoder
    prompts = ["a red boat", "word " * 100, "", "café, über (x:1.2)"]
    embeddings = PromptEmbeddings(encoder, {"easynegative": vectors(2)})
    assert torch.equal(embeddings.tokenize(prompts), encoder.tokenize(prompts))
    assert torch.equal(encoded(tiny_components, prompts, embeddings), encoded(tiny_components, prompts))


def test_a_multi_vector_embedding_takes_as_many_places_as_it_has_vectors(tiny_components):
    """Three vectors for a two-token name: the prompt grows by one token, and the text encoder
    reads the vectors where the name stood (checked against the same sequence built by hand)."""
    encoder = tiny_components.first_text_encoder
    rows = vectors(3)
    embeddings = PromptEmbeddings(encoder, {"easynegative": rows})
    assert len(encoder.word_tokens("easynegative")) == 2
    tokens = embeddings.tokenize(["a easynegative boat"])[0].tolist()
    a, boat = encoder.word_tokens("a")[0], encoder.word_tokens("boat")[0]
    first = embeddings.first_place
    assert tokens[:7] == [49406, a, first, first + 1, first + 2, boat, 49407]

    ours = encoded(tiny_components, ["a easynegative boat"], embeddings)
    # By hand: the table's rows for "a <3 placeholders> boat" with the vectors written in.
    table = encoder.token_embedding
    hand = torch.tensor([tokens]).clamp(max=table.num_embeddings - 1)
    handle = table.register_forward_hook(lambda m, i, out: torch.cat([out[:, :2], rows[None], out[:, 5:]], dim=1))
    try:
        with torch.no_grad():
            theirs = encoder(hand).hidden
    finally:
        handle.remove()
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, encoded(tiny_components, ["a easynegative boat"]))


def test_a_one_vector_embedding_equals_the_bundled_lora_form(tiny_components, tmp_path):
    """Same vector, two mechanisms: the LoRA's row of a one-token word, the file's places."""
    from ldm.lora.apply import apply_loras

    rows = vectors(1, seed=4)
    save_file({"bundle_emb.red.string_to_param.*": rows}, str(tmp_path / "red-lora.safetensors"))
    prompts = ["a red boat", "red, red and blue"]
    ours = encoded(tiny_components, prompts, PromptEmbeddings(tiny_components.first_text_encoder, {"red": rows}))
    applied = apply_loras(tiny_components, [(tmp_path / "red-lora.safetensors", 1.0)])
    bundled = encoded(tiny_components, prompts)
    applied.unload()
    assert torch.equal(ours, bundled)


def test_a_name_that_is_also_a_word_is_the_embedding_wherever_the_word_stands(tiny_components):
    """As in AUTOMATIC1111: matched by tokens, so any case ("RED"), next to punctuation ("red,"),
    but not inside another word ("reds" is another token)."""
    encoder = tiny_components.first_text_encoder
    embeddings = PromptEmbeddings(encoder, {"red": vectors(2)})
    assert embeddings.finder.used_in("a RED boat, red, reds") == ["red"]
    assert embeddings.finder.used_in("a reds boat") == []
    assert torch.equal(encoded(tiny_components, ["a RED boat"], embeddings), encoded(tiny_components, ["a red boat"], embeddings))
    assert torch.equal(encoded(tiny_components, ["a reds boat"], embeddings), encoded(tiny_components, ["a reds boat"]))


def test_the_longest_name_wins_where_two_start_alike(tiny_components):
    encoder = tiny_components.first_text_encoder
    embeddings = PromptEmbeddings(encoder, {"easy": vectors(1), "easynegative": vectors(2)})
    assert embeddings.finder.used_in("easynegative and easy") == ["easynegative", "easy"]


def test_a_file_too_wide_for_the_text_encoder_is_skipped_and_naming_it_is_a_one_line_error(tiny_components, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file({"emb_params": vectors(1, width=768)}, str(folder / "wide.safetensors"))
    save_file({"emb_params": vectors(1)}, str(folder / "fits.safetensors"))
    found = catalog(folder, tiny_components)
    assert list(found.loaded) == ["fits"] and list(found.skipped) == ["wide"]
    with pytest.raises(EmbeddingFileError) as error:
        request_embeddings(tiny_components, folder, ["a wide lake", ""])
    message = str(error.value)
    assert "wide.safetensors" in message and "768" in message and str(WIDTH) in message and "\n" not in message
    used = request_embeddings(tiny_components, folder, ["a lake with fits", ""])  # the others still work
    assert [each.name for each in used.used] == ["fits"] and "wide.safetensors" in used.notes[0]


def test_an_sdxl_file_is_refused_in_one_line_on_a_one_encoder_model(tiny_components, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file({"clip_l": vectors(2, 768), "clip_g": vectors(2, 1280)}, str(folder / "xl.safetensors"))
    read, why = catalog(folder, tiny_components).skipped["xl"]
    assert read.shape == 2048 and read.vectors == 2
    assert re.search(r"xl\.safetensors: an SDXL embedding .*this model has 1 text encoder", why) and "\n" not in why


class Payload:
    """Unpickling this would run code: it would create `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def test_a_pt_file_carrying_a_pickle_payload_is_refused_and_its_code_never_runs(tiny_components, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    marker = tmp_path / "payload-ran"
    path = save_pt({"string_to_param": {"*": vectors(1)}, "name": "evil", "x": Payload(marker)}, folder / "evil.pt")
    with pytest.raises(EmbeddingFileError, match="evil.pt is refused: not a tensors-only file") as error:
        read_embedding_file(path)
    assert "\n" not in str(error.value) and "GLOBAL" in str(error.value)
    assert list(catalog(folder, tiny_components).skipped) == ["evil"]
    with pytest.raises(EmbeddingFileError, match="names the embedding 'evil'.*refused"):
        request_embeddings(tiny_components, folder, ["an evil lake", ""])
    pipe = Pipeline(tiny_components, embeddings_dir=str(folder))
    with pytest.raises(GenerationError, match="evil.pt is refused"):
        pipe.generate("an evil lake", **FAST)
    assert not marker.exists()
    torch.load(str(path), weights_only=False)  # the payload is real: an unrestricted unpickle runs it
    assert marker.exists()


def test_the_base_model_draws_the_same_pixels_when_no_embedding_is_named(tiny_components, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    a1111_pt(vectors(2), folder / "style.pt")
    plain = Pipeline(tiny_components).generate("a lake", negative="blurry", **FAST)
    with_folder = Pipeline(tiny_components, embeddings_dir=str(folder)).generate("a lake", negative="blurry", **FAST)
    assert plain.images[0].tobytes() == with_folder.images[0].tobytes()
    assert "TI hashes" not in with_folder.parameters[0].to_text()


def test_the_png_records_ti_hashes_as_a1111_does(tiny_components, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    style = a1111_pt(vectors(2), folder / "style.pt")
    save_file({"emb_params": vectors(1, seed=1)}, str(folder / "bad_hands.safetensors"))
    pipe = Pipeline(tiny_components, embeddings_dir=str(folder))
    result = pipe.generate("a lake, style", negative="bad_hands, style", **FAST)
    text = result.parameters[0].to_text()
    hashes = f"style: {file_hash(style)}, bad_hands: {file_hash(folder / 'bad_hands.safetensors')}"
    assert f'TI hashes: "{hashes}"' in text.splitlines()[-1]
    assert parse_parameters(text)["TI hashes"] == hashes
    assert len(file_hash(style)) == 12
    # The embedding changed the picture, and it is used for this request only.
    plain = pipe.generate("a lake, stylus", negative="bad hands", **FAST)
    assert result.images[0].tobytes() != plain.images[0].tobytes()
    assert tiny_components.conditioner.embeddings is None


def test_pipeline_load_finds_the_model_folders_embeddings(tiny_model_dir, tmp_path):
    (tiny_model_dir / "embeddings").mkdir()
    a1111_pt(vectors(2), tiny_model_dir / "embeddings" / "style.pt")
    assert Pipeline.load(tiny_model_dir).embeddings_dir == str(tiny_model_dir / "embeddings")
    assert Pipeline.load(tiny_model_dir, embeddings_dir=tmp_path).embeddings_dir == str(tmp_path)


def test_a_file_too_large_for_an_embedding_is_skipped_unread(tiny_components, tmp_path):
    folder = tmp_path / "embeddings"
    folder.mkdir()
    with open(folder / "model.pt", "wb") as handle:
        handle.truncate(17 * 2**20)  # a model in the wrong folder: refused by its size, not unpickled
    read, why = catalog(folder, tiny_components).skipped["model"]
    assert read is None and "too large for an embedding" in why


def test_a_multi_vector_file_gives_what_diffusers_textual_inversion_gives(tmp_path):
    """An independent reading, on a diffusers SD folder (transformers' CLIP and tokenizer):
    diffusers adds the vectors as new tokens <x>, <x>_1, ... and expands the prompt's <x>."""
    from diffusers import StableDiffusionPipeline
    from sd_folder import write_tiny_sd_folder
    from tiny import build_tiny

    from ldm.formats.model_folder import load_model

    folder = write_tiny_sd_folder(build_tiny(text_encoder__width=64, text_encoder__heads=1, unet__cross_attention_dim=64), tmp_path / "sd", text_heads=1)
    rows = vectors(3, width=64, seed=5)
    components = load_model(folder)
    encoder = components.first_text_encoder
    prompts = ["a sailboat b", "lake " * 90]
    embeddings = PromptEmbeddings(encoder, {"sailboat": rows})
    assert torch.equal(PromptEmbeddings(encoder, {}).tokenize(prompts), encoder.tokenize(prompts))
    ours = encoded(components, ["a sailboat b"], embeddings)

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None, local_files_only=True)
    pipe.load_textual_inversion(rows, token="<x>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    theirs, _ = pipe.encode_prompt("a <x> b", "cpu", 1, False)
    assert (ours - theirs).abs().max() < 1e-5


def test_an_embedding_reads_the_same_through_a1111_syntax_as_through_plain_text(tiny_components, tmp_path):
    """A1111's syntax (the default: chunked, weighted) reads embedding names as their vectors
    too: with nothing to weigh, the picture is plain syntax's, and a weight changes it."""
    folder = tmp_path / "embeddings"
    folder.mkdir()
    a1111_pt(vectors(2), folder / "style.pt")
    pipe = Pipeline(tiny_components, embeddings_dir=str(folder))
    syntax = pipe.generate("a lake, style", **FAST)
    plain = pipe.generate("a lake, style", prompt_syntax="plain", **FAST)
    assert syntax.images[0].tobytes() == plain.images[0].tobytes()
    assert "TI hashes" in syntax.parameters[0].to_text()
    words = Pipeline(tiny_components).generate("a lake, style", **FAST)  # no embeddings folder: the word
    assert syntax.images[0].tobytes() != words.images[0].tobytes()
