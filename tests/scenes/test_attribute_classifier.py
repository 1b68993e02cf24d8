"""The attribute classifier: labels, files, augmentation, training, and the shipped weights."""

import pytest
import torch

from ldm.formats.model_folder import ModelError
from ldm.scenes.generator import SceneAttributes
from ldm.scenes import seeds
from ldm.scenes.attribute_classifier import (
    DEFAULT_CLASSIFIER_PATH,
    CONCEPT_HEADS,
    HEADS,
    AttributeClassifier,
    ClassifierConfig,
    label_indices,
    load_classifier,
    save_classifier,
    scene_labels,
)
from ldm.scenes.classifier_training import (
    accuracy_per_head,
    augment,
    gaussian_blur,
    render_scenes,
    to_pixels,
    train_classifier,
)

SMALL = ClassifierConfig(input_size=32)


def test_labels_cover_every_head_with_a_known_class():
    scene = SceneAttributes("dusk", "snowfield", mountains=True, trees=3, celestial="sun", celestial_position="right")
    labels = scene_labels(scene)
    assert list(labels) == [*HEADS, *CONCEPT_HEADS]  # a concept judge's heads too
    assert labels == {
        "time_of_day": "dusk",
        "setting": "snowfield",
        "mountains": "yes",
        "trees": "3",
        "celestial": "sun",
        "celestial_position": "right",
        "clouds": "no",
        "house": "no",
        "windmill": "no",
    }
    assert [HEADS[name][k] for name, k in zip(HEADS, label_indices(scene))] == [labels[name] for name in HEADS]


def test_any_image_size_gives_one_logit_row_per_image():
    torch.manual_seed(0)
    model = AttributeClassifier(SMALL).eval()
    for size in (16, 32, 72):
        logits = model(torch.zeros(2, 3, size, size))
        assert {name: tuple(out.shape) for name, out in logits.items()} == {n: (2, len(c)) for n, c in HEADS.items()}
    assert 100_000 <= sum(p.numel() for p in AttributeClassifier().parameters()) <= 300_000


def test_save_and_load_keep_outputs_config_and_record(tmp_path):
    torch.manual_seed(0)
    model = AttributeClassifier(SMALL).eval()
    path = tmp_path / "classifier.safetensors"
    save_classifier(model, path, {"accuracy": {"time_of_day": 0.99}})
    loaded = load_classifier(path)
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    assert loaded.config == SMALL and loaded.metadata == {"accuracy": {"time_of_day": 0.99}}
    for name, out in model(pixels).items():
        assert torch.equal(out, loaded(pixels)[name])


def test_other_files_are_refused_with_a_reason(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "unet.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    with pytest.raises(ModelError, match="not an attribute classifier"):
        load_classifier(other)
    with pytest.raises(ModelError, match="not found"):
        load_classifier(tmp_path / "missing.safetensors")
    with pytest.raises(ModelError, match="pickled"):
        load_classifier(tmp_path / "classifier.pt")


def test_augmentation_is_small_seeded_and_in_range():
    coarse = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear")  # smooth, like scenes
    first = augment(pixels, torch.Generator().manual_seed(1))
    assert torch.equal(first, augment(pixels, torch.Generator().manual_seed(1)))
    assert first.min() >= -1 and first.max() <= 1
    assert 0.01 < (first - pixels).abs().mean() < 0.08  # changes the pixels, not the scene (about 0.04)
    assert torch.allclose(gaussian_blur(pixels, torch.zeros(8)), pixels, atol=1e-6)


def test_short_training_learns_time_of_day_and_setting():
    torch.manual_seed(0)
    model = AttributeClassifier(SMALL)
    images, labels = render_scenes(model, 192, seeds.CLASSIFIER_TRAIN, size=32)
    assert images.dtype == torch.uint8 and images.shape == (192, 3, 32, 32) and labels.shape == (192, len(HEADS))
    fresh_images, fresh_labels = render_scenes(model, 64, seeds.CLASSIFIER_VALIDATION, size=32)
    untrained = accuracy_per_head(model, fresh_images, fresh_labels)
    losses = train_classifier(model, images, labels, steps=40, generator=torch.Generator().manual_seed(0), batch_size=32)
    trained = accuracy_per_head(model, fresh_images, fresh_labels)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert trained["time_of_day"] >= 0.8 and trained["setting"] >= 0.8, (untrained, trained)


def test_shipped_classifier_reads_fresh_scenes():
    classifier = load_classifier(DEFAULT_CLASSIFIER_PATH)
    images, labels = render_scenes(classifier, 64, seeds.CLASSIFIER_TEST, size=128)
    accuracy = accuracy_per_head(classifier, images, labels)
    assert accuracy["time_of_day"] >= 0.9 and accuracy["setting"] >= 0.9, accuracy
    assert set(classifier.metadata["accuracy"]) == set(HEADS)
    predicted, features = classifier.predict(to_pixels(images[:4]))
    assert len(predicted) == 4 and features.shape == (4, classifier.config.hidden)
