"""Resume from webdataset shards, on the path ldm-train takes: a run killed mid-epoch and
resumed trains on the same samples in the same order as a run never stopped (same losses),
and decodes only the images it trains on; the checkpoint keeps every process's place."""

import json

import pytest

from configs import tiny_train_config
from test_resume import killed_during_step
from tiny_data import tiny_shards

from ldm.data import shards
from ldm.training.checkpoints import resolve_checkpoint
from ldm.training.loop import train


def shard_run(output_dir, pattern, resume=None, **settings):
    # 4 shards of 2 samples, global batch 2: 4 batches an epoch, so the runs cross an epoch.
    settings = {"max_steps": 6, "save_every": 2, "ema_decay": 0.9, "warmup_steps": 2, "lr_schedule": "cosine", **settings}
    config = tiny_train_config("text2img", output_dir, **settings)
    config.data.source, config.data.path, config.data.shuffle_buffer = "webdataset", pattern, 3
    return train(config, resume=resume)


def trained_keys(monkeypatch) -> list[str]:
    """The keys of the samples each step trains on, in order, from here on."""
    from ldm.training.text2img_stage import Text2ImgModule

    seen, forward = [], Text2ImgModule.forward

    def spy(self, batch, randomness, step):
        seen.extend(batch["key"])
        return forward(self, batch, randomness, step)

    monkeypatch.setattr(Text2ImgModule, "forward", spy)
    return seen


def test_a_run_killed_mid_epoch_resumes_exactly_decoding_only_what_it_trains_on(tmp_path, monkeypatch):
    pattern = tiny_shards(tmp_path / "shards")
    whole_keys = trained_keys(monkeypatch)
    whole = shard_run(tmp_path / "whole", pattern)
    monkeypatch.undo()
    forward = killed_during_step(monkeypatch, 3)  # after the checkpoint at step 2, half an epoch in
    with pytest.raises(KeyboardInterrupt):
        shard_run(tmp_path / "split", pattern)
    from ldm.training.text2img_stage import Text2ImgModule

    monkeypatch.setattr(Text2ImgModule, "forward", forward)
    resumed_keys = trained_keys(monkeypatch)
    decoded, decode = [], shards.decode_image
    monkeypatch.setattr(shards, "decode_image", lambda source, min_size: decoded.append(source) or decode(source, min_size))
    checkpoint = resolve_checkpoint("latest", tmp_path / "split")
    saved = json.loads((checkpoint / "trainer.json").read_text())["data_position"]
    second = shard_run(tmp_path / "split", pattern, resume=checkpoint)
    assert second.losses == pytest.approx(whole.losses[2:], abs=1e-6)
    assert resumed_keys == whole_keys[4:]  # steps 3-6: the rest of epoch 0, then epoch 1
    assert len(decoded) == len(resumed_keys) == 8  # not the 4 samples of steps 1 and 2
    assert saved["epoch"] == 0 and saved["batch"] == 2 and len(saved["processes"]) == 1
    assert saved["processes"][0]["stream"]["positions"][0]["shard"] >= 1  # the first shard is done


def test_each_process_resumes_its_own_position_and_another_process_count_the_epoch_and_batch():
    from ldm.training.data_positions import process_data_position

    saved = {"epoch": 1, "batch": 4, "processes": [{"epoch": 1, "batch": 4, "stream": {"rank": r}} for r in range(2)]}
    assert [process_data_position(saved, rank, 2)["stream"] for rank in range(2)] == [{"rank": 0}, {"rank": 1}]
    # Other shards per process: no process's place applies; the stream reads past the batches.
    assert process_data_position(saved, 0, 4) == {"epoch": 1, "batch": 4}
    assert process_data_position({"epoch": 1, "batch": 4}, 0, 1) == {"epoch": 1, "batch": 4}  # an older checkpoint
