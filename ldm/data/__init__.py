"""The data layer: image sources, decoding, transforms, caption handling, latent cache.

    from ldm.data import build_dataset, make_batches
    dataset = build_dataset(config.data, seed=0, rank=0, world_size=1, split="train")
    for batch in make_batches(dataset, batch_size=8, seed=0, num_workers=2).epoch_batches(): ...
    print(dataset.stats.summary())
"""

from ldm.data.batches import make_batches
from ldm.data.build import SOURCES, build_dataset
from ldm.data.config import DataConfig
from ldm.data.errors import DataError
from ldm.data.stats import DataStats

__all__ = ["DataConfig", "DataError", "DataStats", "SOURCES", "build_dataset", "make_batches"]
