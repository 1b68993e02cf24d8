"""Bad data.captions values: one-line ConfigErrors when the config is read, DataErrors when a
dataset is built from them directly."""

import pytest
from configs import tiny_train_config, tiny_train_dict

from ldm.config import ConfigError, from_dict
from ldm.data import DataError, build_dataset
from ldm.data.config import CaptionSettings, DataConfig
from ldm.training.config import TrainConfig, validate_train

BAD = [
    ({"keep_tokens": -1}, "data.captions.keep_tokens must not be negative, got -1"),
    ({"tag_dropout": 1.5}, "data.captions.tag_dropout must be in [0, 1], got 1.5"),
    ({"tag_separator": ""}, "data.captions.tag_separator is empty"),
    ({"trigger": " sks"}, "data.captions.trigger ' sks' has spaces around it"),
    ({"trigger": "sks, dog"}, "data.captions.trigger 'sks, dog' holds the tag separator ','"),
]


@pytest.mark.parametrize("values, message", BAD)
def test_bad_settings_are_one_line_config_and_data_errors(tmp_path, values, message):
    config = tiny_train_config("text2img", str(tmp_path / "run"))
    config.data.captions = CaptionSettings(**values)
    with pytest.raises(ConfigError) as error:
        validate_train(config)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    with pytest.raises(DataError) as error:  # before anything is read
        build_dataset(DataConfig(path=str(tmp_path), captions=CaptionSettings(**values)))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_wrongly_typed_or_misspelt_setting_is_a_config_error_naming_it(tmp_path):
    data = tiny_train_dict("text2img", tmp_path / "run")
    data["data"]["captions"] = {"keep_tokens": "two"}
    with pytest.raises(ConfigError, match="data.captions.keep_tokens"):
        from_dict(TrainConfig, data)
    data["data"]["captions"] = {"keep_token": 2}
    with pytest.raises(ConfigError, match="unknown config key 'data.captions.keep_token'"):
        from_dict(TrainConfig, data)
