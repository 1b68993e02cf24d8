"""The judge check of issue 26: pictures read before and after an upscale (brought back to
their size). Fakes stand in for the models: real scene drawings as the "generated" pictures,
a bicubic enlargement as a faithful upscaler, a grey picture as one that loses everything."""

from types import SimpleNamespace

from PIL import Image

from ldm.scenes.attribute_classifier import DEFAULT_CLASSIFIER_PATH, load_classifier
from ldm.scenes.draw import draw_scene
from ldm.scenes.generator import scene_seed
from ldm.scenes.prompts import build_prompts
from ldm.scenes.upscale_judging import back_to_size, judge_upscaled


class Drawings:
    """A "model" whose pictures are true drawings of the prompt's scene."""

    def __init__(self, prompts):
        self.scenes = {p.text: p.scene for p in prompts}

    def generate(self, text, n, seed, **settings):
        return SimpleNamespace(images=[draw_scene(self.scenes[text], scene_seed(5, seed + k), 128) for k in range(n)])


class Upscaler:
    def __init__(self, enlarge):
        self.enlarge, self.options = enlarge, []

    def upscale(self, text, picture, **options):
        self.options.append(options)
        return SimpleNamespace(images=[self.enlarge(picture)])


def test_a_faithful_upscale_keeps_the_judges_accuracy_and_a_lossy_one_does_not():
    prompts = build_prompts("both", 1, 0)[:6]
    classifier = load_classifier(DEFAULT_CLASSIFIER_PATH)
    bicubic = Upscaler(lambda p: p.resize((512, 512), Image.BICUBIC))
    kept = judge_upscaled(Drawings(prompts), bicubic, classifier, prompts, 2, steps=3)
    before, after = kept["before"]["all"]["overall"], kept["after"]["all"]["overall"]
    assert before > 0.8 and abs(after - before) <= 0.05, (before, after)
    assert bicubic.options[0] == {"seed": 0, "progress": False, "steps": 3}
    grey = judge_upscaled(Drawings(prompts), Upscaler(lambda p: Image.new("RGB", (512, 512), "grey")), classifier, prompts, 2)
    assert grey["before"] == kept["before"] and grey["after"]["all"]["overall"] < before - 0.2


def test_pictures_come_back_to_the_judges_size():
    assert back_to_size(Image.new("RGB", (512, 512), "red"), 128).size == (128, 128)
