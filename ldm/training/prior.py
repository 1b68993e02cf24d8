"""DreamBooth's prior preservation (Ruiz et al. 2022), for stages text2img and lora.

Fine-tuning a concept on a few images also teaches the model that the concept's class looks
like them (language drift). Prior preservation trains, at every step, as many class images
("a photo of a windmill", drawn by the base model itself before training) beside the data,
captioned with the class prompt: loss = data loss + prior.weight x class loss, as diffusers'
train_dreambooth computes it.

Class images come from prior.class_data, or are drawn once into OUTPUT/class_images by the base
model (image i with seed prior.seed + i, so an interrupted drawing finishes with the images it
would have made in one go; images already there are kept). Under N processes each draws its
share (image i by process i mod N) and all read the whole folder once every share is written. Which class images a micro-step
trains on follows from (seed, step, micro-step, process) alone: each epoch of the class images
is a seeded permutation and the run walks through it as the global batch does, so a resumed
run and N processes train on exactly the class images one uninterrupted process would.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ldm.data.decode import decode_image
from ldm.data.errors import DataError
from ldm.data.imagefolder import folder_files
from ldm.data.randomness import mixed_seed
from ldm.data.transforms import ImageTransform
from ldm.diffusion.samplers import default_sampler
from ldm.files import writing_file
from ldm.models.components import Components
from ldm.pipeline import Pipeline
from ldm.training.config import PriorSection, TrainConfig

CLASS_FOLDER = "class_images"
# Class folders this process has seen whole after every process drew its share.
SHARED_FOLDERS: set[Path] = set()
ORDER_STREAM = 61  # the class images' epoch permutations: a stream of their own (ldm.data.randomness)


def class_image_name(index: int) -> str:
    return f"{index:05d}.png"


def missing_class_images(prior: PriorSection, folder: Path, rank: int = 0, world_size: int = 1) -> list[int]:
    """The class images `folder` lacks, of process `rank`'s share (i mod world_size == rank)."""
    return [i for i in range(rank, prior.num_class_images, world_size) if not (folder / class_image_name(i)).exists()]


def draw_class_images(
    components: Components, prior: PriorSection, folder: Path, size: int, progress: bool = True, rank: int = 0, world_size: int = 1
) -> int:
    """Draws the class images of process `rank`'s share that `folder` lacks with the model in
    `components`; returns how many. Each is written whole (a killed run leaves no half image)
    and kept on a rerun."""
    missing = missing_class_images(prior, folder, rank, world_size)
    if not missing:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline(components)
    options = dict(steps=prior.steps, cfg=prior.cfg, sampler=prior.sampler or default_sampler(components.scheduler_config))
    components.denoiser.eval()
    with torch.random.fork_rng():  # drawing leaves the run's own randomness as it was
        for done, index in enumerate(missing, 1):
            image = pipeline.generate(prior.class_prompt, seed=prior.seed + index, width=size, height=size, progress=False, **options).images[0]
            with writing_file(folder / class_image_name(index)) as temp:
                image.save(temp, format="PNG")
            if progress:
                print(f"\rldm-train: class images {done}/{len(missing)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return len(missing)


def class_images(config: TrainConfig, components: Components, output_dir: Path, rank: int = 0, world_size: int = 1) -> list[Path]:
    """The class image files: prior.class_data's, or OUTPUT/class_images drawn first where
    missing, each process its share (one progress line: the first process's)."""
    prior = config.prior
    if prior.class_data:
        files, _ = folder_files(prior.class_data, "prior.class_data")
        return [Path(prior.class_data) / file for file in files]
    folder = output_dir / CLASS_FOLDER
    files = [folder / class_image_name(i) for i in range(prior.num_class_images)]
    if folder.resolve() in SHARED_FOLDERS and not missing_class_images(prior, folder):
        return files  # a second build in this process (FSDP's unsharded copy, on one process only): no waiting
    draw_class_images(components, prior, folder, config.data.resolution, config.train.progress and rank == 0, rank, world_size)
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every process, whether it drew or not (a condition each one tested for itself could
        # differ between them): each then reads what the others drew.
        torch.distributed.barrier()
    SHARED_FOLDERS.add(folder.resolve())
    return files


class ClassSamples:
    """A micro-step's class images as a batch {"pixels": (b, 3, R, R), "caption", "key"}."""

    def __init__(self, files: list[Path], prompt: str, resolution: int, seed: int, batch_size: int, grad_accum: int):
        self.files, self.prompt, self.seed = files, prompt, seed
        self.batch_size, self.grad_accum = batch_size, grad_accum
        self.transform = ImageTransform(resolution)
        check_readable(files)

    @classmethod
    def of(cls, config: TrainConfig, files: list[Path]) -> "ClassSamples":
        train = config.train
        return cls(files, config.prior.class_prompt, config.data.resolution, train.seed, train.batch_size, train.grad_accum)

    def indices(self, step: int, micro_step: int, rank: int, world_size: int, local_batch: int) -> list[int]:
        """Which class images process `rank` trains on: the global batch's places in the walk
        through the epochs' permutations (train.batch_size per process, whatever this batch holds)."""
        first = (step * self.grad_accum + micro_step) * self.batch_size * world_size + rank * self.batch_size
        return [self.at(first + i) for i in range(local_batch)]

    def at(self, place: int) -> int:
        epoch, offset = divmod(place, len(self.files))
        order = torch.randperm(len(self.files), generator=torch.Generator().manual_seed(mixed_seed(self.seed, epoch, ORDER_STREAM)))
        return int(order[offset])

    def batch(self, randomness, local_batch: int) -> dict:
        chosen = self.indices(randomness.step, randomness.micro_step, randomness.rank, randomness.world_size, local_batch)
        pixels = torch.stack([self.read(i) for i in chosen])  # (b, 3, R, R)
        return {"pixels": pixels, "caption": [self.prompt] * len(chosen), "key": [self.files[i].name for i in chosen]}

    def read(self, index: int) -> torch.Tensor:
        decoded = decode_image(self.files[index])
        if decoded.image is None:
            raise DataError(f"class image {self.files[index]} cannot be read ({decoded.skipped})")
        return self.transform(decoded.image)  # (3, R, R)


def check_readable(files: list[Path]) -> None:
    """Every class image opens (its header), before the first step rather than at some step."""
    for file in files:
        try:
            with Image.open(file):
                pass
        except (OSError, UnidentifiedImageError):
            raise DataError(f"prior: class image {file} is missing or not an image") from None
