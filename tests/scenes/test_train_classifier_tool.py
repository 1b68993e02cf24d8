"""tools/train_attribute_classifier.py: a tiny run writes a loadable classifier with its record."""

import pytest

from ldm.scenes.attribute_classifier import HEADS, load_classifier
from tool_scripts import load_tool

train_tool = load_tool("train_attribute_classifier.py", "train_attribute_classifier")


def test_tiny_run_writes_weights_with_config_and_accuracy(tmp_path, capsys):
    out = tmp_path / "clf.safetensors"
    args = ["--n", "24", "--val-n", "8", "--steps", "2", "--batch-size", "8", "--size", "32", "--workers", "1"]
    assert train_tool.main([str(out), *args]) == 0
    classifier = load_classifier(out)
    record = classifier.metadata
    assert set(record["accuracy"]) == set(record["accuracy_augmented"]) == set(HEADS)
    assert record["steps"] == 2 and "dataset seed 10000000" in record["trained_on"]
    assert "| time_of_day |" in capsys.readouterr().out

    half = tmp_path / "half.safetensors"
    assert train_tool.main([str(half), *args, "--fp16"]) == 0
    assert half.stat().st_size < 0.6 * out.stat().st_size
    assert load_classifier(half).config == classifier.config


@pytest.mark.parametrize("bad", [["--n", "0"], ["--steps", "0"], ["--size", "8"], ["--threads", "0"]])
def test_bad_values_fail_with_one_line(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_tool.main([str(tmp_path / "x.safetensors"), *bad])
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_output_must_be_safetensors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_tool.main([str(tmp_path / "clf.pt")])
    assert "should end in .safetensors" in capsys.readouterr().err
