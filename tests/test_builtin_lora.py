"""The built-in scenes model's example LoRA (loras/windmill-lora.safetensors): shipped small,
found by name, and drawing the windmill the model alone never draws."""

from safetensors import safe_open

from ldm.builtin_models import resolve_model
from ldm.images import from_pil
from ldm.pipeline import Pipeline
from ldm.scenes.attribute_classifier import DEFAULT_CLASSIFIER_PATH, load_classifier

WINDMILL_JUDGE = DEFAULT_CLASSIFIER_PATH.with_name("scene_attributes_windmill.safetensors")  # the judge with a windmill head
PROMPT = "a simple picture of a green field at noon with a white windmill"


def test_the_scenes_model_ships_a_windmill_lora_of_at_most_2_mb():
    path = resolve_model("scenes") / "loras" / "windmill-lora.safetensors"
    assert path.stat().st_size <= 2 * 10**6
    with safe_open(str(path), framework="pt") as handle:
        assert "bundle_emb.windmill.string_to_param.*" in handle.keys()
        assert any(key.startswith("lora_unet_") for key in handle.keys())
        assert handle.metadata()["ldm_trigger_words"] == "windmill"


def test_the_windmill_lora_found_by_name_draws_windmills_the_model_alone_does_not():
    pipe = Pipeline.load("scenes")
    judge = load_classifier(WINDMILL_JUDGE)
    options = dict(steps=20, cfg=7.5, seed=0, n=8, progress=False)

    def windmills(result) -> int:
        labels, _ = judge.predict(from_pil(result.images))
        return sum(label["windmill"] == "yes" for label in labels)

    with_lora = pipe.generate(PROMPT, loras=(("windmill-lora", 1.0),), **options)
    assert with_lora.parameters[0].fields()["Lora hashes"].startswith("windmill-lora: ")
    assert windmills(with_lora) >= 6 and windmills(pipe.generate(PROMPT, **options)) == 0  # measured: 8 and 0
