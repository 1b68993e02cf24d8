"""Prior preservation's class images under several processes (ldm.training.prior.class_images):
each process draws its share (image i by process i mod N), then every process waits for the
others, always, and reads the whole folder; one progress line; a second build of the stage in
one process (FSDP's unsharded copy, built by the main process alone) neither draws nor waits."""

from types import SimpleNamespace

import torch
from PIL import Image

from configs import tiny_train_dict

from ldm.config import from_dict
from ldm.training import prior as prior_module
from ldm.training.config import TrainConfig
from ldm.training.prior import CLASS_FOLDER, class_images


class SeedPictures:
    """Stands for the base model's pipeline: image i is a flat colour of its seed."""

    seeds: list[int] = []

    def __init__(self, components):
        pass

    def generate(self, prompt, seed, width, height, progress, **options):
        SeedPictures.seeds.append(seed)
        return SimpleNamespace(images=[Image.new("RGB", (width, height), (seed % 256, 0, 0))])


def prior_run(tmp_path, count):
    data = tiny_train_dict("lora", tmp_path / "run", progress=True)
    data["lora"] = {"init_from": "unused", "rank": 2}
    data["prior"] = {"class_prompt": "a thing", "num_class_images": count, "sampler": "ddim", "seed": 10}
    return from_dict(TrainConfig, data)


def test_each_process_draws_its_share_and_all_wait_for_the_whole_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prior_module, "SHARED_FOLDERS", set())
    monkeypatch.setattr(prior_module, "Pipeline", SeedPictures)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    waits = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda: waits.append(len(SeedPictures.seeds)))
    config, components = prior_run(tmp_path, 5), SimpleNamespace(denoiser=torch.nn.Identity())
    SeedPictures.seeds = []
    files = [class_images(config, components, tmp_path / "run", rank, 2) for rank in (0, 1)]
    assert SeedPictures.seeds == [10, 12, 14, 11, 13]  # process 0: images 0, 2, 4; process 1: 1, 3
    assert waits == [3, 5]  # each process waited, after drawing its share
    assert files[0] == files[1] == [tmp_path / "run" / CLASS_FOLDER / f"{i:05d}.png" for i in range(5)]
    assert [Image.open(file).getpixel((0, 0))[0] for file in files[0]] == [10, 11, 12, 13, 14]  # one process's pictures
    assert capsys.readouterr().err.count("class images 1/3") == 1  # the first process's progress only
    # A process that finds its share drawn (a new process: nothing remembered) still waits: the
    # others may be drawing theirs.
    monkeypatch.setattr(prior_module, "SHARED_FOLDERS", set())
    class_images(config, components, tmp_path / "run", 1, 2)
    assert SeedPictures.seeds == [10, 12, 14, 11, 13] and waits == [3, 5, 5]


def test_a_second_build_in_the_same_process_neither_draws_nor_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(prior_module, "SHARED_FOLDERS", set())
    monkeypatch.setattr(prior_module, "Pipeline", SeedPictures)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    waits = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda: waits.append(1))
    config, components = prior_run(tmp_path, 2), SimpleNamespace(denoiser=torch.nn.Identity())
    SeedPictures.seeds = []
    class_images(config, components, tmp_path / "run", 0, 2)
    class_images(config, components, tmp_path / "run", 1, 2)
    assert len(waits) == 2
    class_images(config, components, tmp_path / "run", 0, 2)  # the main process alone
    assert len(waits) == 2 and SeedPictures.seeds == [10, 11]
    (tmp_path / "run" / CLASS_FOLDER / "00001.png").unlink()  # a later run in this process: drawn again, together
    class_images(config, components, tmp_path / "run", 1, 2)
    assert len(waits) == 3 and SeedPictures.seeds == [10, 11, 11]
