"""Latents of the frozen VAE, computed once, stored on disk, reused across epochs and runs.

    description = dataset.describe()              # transform settings + dataset identity
    if cache_allowed(description):                # False, with a warning, for random crop/flip
        cache = LatentCache(root, cache_key(fingerprint_module(vae), description))
        build_latent_cache(dataset, encode_fn, cache, batch_size)   # a no-op when complete
        train_set = CachedLatentDataset(cache, caption_dropout, seed)   # batch with make_batches

Layout of root/<key>/:
    shard-000000.safetensors  tensors "mean", "std" (N, C, h, w) of the posterior, the samples'
                              "original_size" and "crop_top_left", and any extras a stage
                              computes once per sample (e.g. "control_map"); metadata "keys"
                              and "captions" (JSON): the captions index. One latent shape per
                              shard: aspect-ratio buckets (data.buckets, part of the key) give
                              a cache of several shapes
    manifest.json             written last: the shards, their byte sizes and sample count

Every file is written to a temporary name and renamed (ldm.files), so a killed build
leaves whole shards or none. A cache without a manifest, or whose shards do not match it,
is never served: building again keeps its whole shards and encodes only the rest.
Build on one process (the main one) and let the others wait.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader

from ldm.data.caption_transforms import CaptionDraw
from ldm.data.config import CaptionSettings
from ldm.data.errors import DataError
from ldm.data.batches import collate_samples
from ldm.data.buckets import BucketPlan, plan_of_sizes
from ldm.data.indexed import Item, split_item
from ldm.data.stream_buckets import GroupedByShape
from ldm.files import writing_file

# Still 1 although shards now keep the size conditioning: a cache built before serves its latents
# without it (only SDXL reads it, and no SDXL cache predates it), so no run re-encodes its data.
CACHE_VERSION = 1
MANIFEST = "manifest.json"
HASH_CHUNK = 16 << 20  # bytes of parameters hashed per update
EncodeFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
ExtrasFn = Callable[[dict], dict[str, torch.Tensor]]  # a caching batch -> more tensors (B, ...) to keep
POSTERIOR = ("mean", "std")
SIZE_CONDITIONING = ("original_size", "crop_top_left")  # kept per sample when the data gives them


# ----------------------------------------------------------------------------- keys


def fingerprint_module(module: torch.nn.Module) -> str:
    """sha256 of a module's state: names, dtypes, shapes and bytes, one tensor (and at
    most HASH_CHUNK bytes) at a time, so an SD-scale VAE (330 MB) hashes in about a second
    without a second copy of its weights in memory."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}\n".encode())
        raw = data.reshape(-1).view(torch.uint8).numpy()
        for start in range(0, raw.size, HASH_CHUNK):
            digest.update(raw[start : start + HASH_CHUNK])
    return digest.hexdigest()


def cache_allowed(description: dict) -> bool:
    """Latents can be cached only for deterministic pixels: a random crop or flip would be
    frozen into the cache. Warns, naming the setting, when the cache must be bypassed."""
    transform = description.get("transform", description)
    settings = {"data.crop=random": transform.get("crop") == "random", "data.random_flip": bool(transform.get("flip"))}
    random = [name for name, on in settings.items() if on]
    if random:
        message = f"latent cache bypassed: {' and '.join(random)} change the pixels every epoch; images are encoded every step"
        warnings.warn(message, stacklevel=2)
    return not random


def cache_key(vae_state_fingerprint: str, transform_description: dict) -> str:
    """sha256 over the VAE weights and `transform_description`: pass `dataset.describe()`,
    which holds the transform settings (resolution, crop, flip) and the dataset identity
    (path, file names, sizes, mtimes and captions; a `datasets` fingerprint; shard list)."""
    if not cache_allowed(transform_description):
        raise ValueError("latents of randomly cropped or flipped images cannot be cached")
    payload = {"version": CACHE_VERSION, "vae": vae_state_fingerprint, "data": transform_description}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- storage


@dataclass
class Shard:
    file: str
    keys: list[str]
    captions: list[list[str]]
    latent_shape: tuple[int, ...] = ()  # (C, h, w): one per shard (aspect-ratio buckets give several per cache)


class LatentCache:
    def __init__(self, root: str | Path, key: str, shard_size: int = 256):
        self.root, self.key, self.shard_size = Path(root), key, shard_size
        self.folder = self.root / key
        self._index: Optional[dict[str, tuple[str, int, list[str]]]] = None  # key -> (file, row, captions)
        self._handles: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        # Open files stay behind; a DataLoader worker opens its own.
        return {**self.__dict__, "_handles": {}}

    # ------------------------------------------------------------------ reading

    @property
    def complete(self) -> bool:
        """Built to the end, and every shard is the size the manifest says."""
        manifest = self._manifest()
        if manifest is None:
            return False
        for shard in manifest["shards"]:
            path = self.folder / shard["file"]
            if not path.is_file() or path.stat().st_size != shard["bytes"]:
                return False
        return True

    def has(self, key: str) -> bool:
        """has(cache.key): the cache is complete; has(sample_key): that sample is in it."""
        if not self.complete:
            return False
        return key == self.key or key in self._load_index()

    def get(self, sample_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the posterior, each (C, h, w)."""
        file, row, _ = self._entry(sample_key)
        handle = self._open(file)
        return handle.get_slice("mean")[row], handle.get_slice("std")[row]

    def extras(self, sample_key: str) -> dict[str, torch.Tensor]:
        """The sample's other stored tensors (a stage's extras), each without the batch axis."""
        file, row, _ = self._entry(sample_key)
        handle = self._open(file)
        return {name: handle.get_slice(name)[row] for name in handle.keys() if name not in POSTERIOR}

    def _open(self, file: str):
        handle = self._handles.get(file)
        if handle is None:
            from safetensors import safe_open

            handle = self._handles[file] = safe_open(str(self.folder / file), "pt")
        return handle

    def captions(self, sample_key: str) -> list[str]:
        return self._entry(sample_key)[2]

    def keys(self) -> list[str]:
        return list(self._load_index())

    def latent_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each sample's latent shape (C, h, w), from the shard headers."""
        self._load_index()
        return {key: self._shapes[file] for key, (file, _, _) in self._index.items()}

    def __len__(self) -> int:
        return len(self._load_index())

    def _entry(self, sample_key: str) -> tuple[str, int, list[str]]:
        try:
            return self._load_index()[sample_key]
        except KeyError:
            raise KeyError(f"{sample_key!r} is not in the latent cache {self.folder}") from None

    def _load_index(self) -> dict[str, tuple[str, int, list[str]]]:
        if self._index is None:
            if not self.complete:
                raise DataError(f"latent cache {self.folder} is not complete: build it with build_latent_cache")
            shards = [self._read_shard(entry["file"]) for entry in self._manifest()["shards"]]
            self._shapes = {shard.file: shard.latent_shape for shard in shards}
            self._index = {
                key: (shard.file, row, captions) for shard in shards for row, (key, captions) in enumerate(zip(shard.keys, shard.captions))
            }
        return self._index

    def _manifest(self) -> Optional[dict]:
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return manifest if manifest.get("version") == CACHE_VERSION and manifest.get("key") == self.key else None

    def _read_shard(self, file: str) -> Shard:
        """The shard's index (from its header only); raises if it is not a whole shard."""
        from safetensors import safe_open

        with safe_open(str(self.folder / file), "pt") as handle:
            metadata = handle.metadata() or {}
            keys, captions = json.loads(metadata["keys"]), json.loads(metadata["captions"])
            rows = {handle.get_slice(name).get_shape()[0] for name in handle.keys()}
            shape = tuple(handle.get_slice("mean").get_shape()[1:])
        if rows != {len(keys)} or len(captions) != len(keys):
            raise ValueError(f"{file}: {rows} rows for {len(keys)} keys")
        return Shard(file, keys, captions, shape)

    # ------------------------------------------------------------------ writing

    def resume(self) -> list[Shard]:
        """Prepares an incomplete cache for building: removes the manifest, temporary files
        and broken shards; returns the whole shards, which are kept."""
        from safetensors import SafetensorError

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / MANIFEST).unlink(missing_ok=True)
        self._index, self._handles = None, {}
        shards = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") and ".tmp-" in path.name:
                path.unlink()  # a write that a crash interrupted
            elif path.suffix == ".safetensors":
                try:
                    shards.append(self._read_shard(path.name))
                except (SafetensorError, OSError, ValueError, KeyError):
                    warnings.warn(f"latent cache: dropping broken shard {path}", stacklevel=2)
                    path.unlink()
        return shards

    def write_shard(
        self, number: int, keys: list[str], captions: list[list[str]], mean: torch.Tensor, std: torch.Tensor, extras: Optional[dict] = None
    ) -> Shard:
        from safetensors.torch import save_file

        file = f"shard-{number:06d}.safetensors"
        metadata = {"keys": json.dumps(keys), "captions": json.dumps(captions)}
        tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in {"mean": mean, "std": std, **(extras or {})}.items()}
        self._atomic_write(file, lambda path: save_file(tensors, str(path), metadata=metadata))
        return Shard(file, keys, captions, tuple(mean.shape[1:]))

    def finish(self, shards: list[Shard]) -> None:
        entries = [{"file": s.file, "bytes": (self.folder / s.file).stat().st_size, "samples": len(s.keys)} for s in shards]
        manifest = {"version": CACHE_VERSION, "key": self.key, "samples": sum(len(s.keys) for s in shards), "shards": entries}
        self._atomic_write(MANIFEST, lambda path: path.write_text(json.dumps(manifest, indent=1)))
        self._index = None

    def _atomic_write(self, name: str, write: Callable[[Path], None]) -> None:
        with writing_file(self.folder / name) as temporary:
            write(temporary)


# ----------------------------------------------------------------------------- building


@torch.no_grad()
def build_latent_cache(
    dataset, encode_fn: EncodeFn, cache: LatentCache, batch_size: int, progress: bool = True, num_workers: int = 0,
    extras_fn: Optional[ExtrasFn] = None,
) -> LatentCache:
    """Encodes every sample of `dataset` (all ranks' samples) that the cache lacks.

    `encode_fn(pixels (B, 3, R, R)) -> (mean, std)`, each (B, C, h, w); `extras_fn(batch)`,
    when given, more tensors per sample to keep beside them (the cache key must then say
    what they are). A complete cache is returned without encoding anything; an incomplete
    one is resumed."""
    from tqdm.auto import tqdm

    if cache.complete:
        return cache
    shards = cache.resume()
    done = {key for shard in shards for key in shard.keys}
    loader = _caching_loader(dataset, done, batch_size, num_workers)
    pending: dict[tuple, dict[str, list]] = {}  # latent shape -> rows waiting for a shard: a shard holds one shape
    number = 1 + max((int(s.file.removeprefix("shard-").split(".")[0]) for s in shards), default=-1)
    total = _cache_total(dataset)
    with tqdm(total=total, initial=len(done) if total else 0, desc="caching latents", unit="img", disable=not progress) as bar:
        for batch in loader:
            if not batch:
                continue  # every sample of this batch was unreadable
            mean, std = encode_fn(batch["pixels"])  # (B, C, h, w) each
            rows = pending.setdefault(tuple(mean.shape[1:]), {"keys": [], "captions": [], "mean": [], "std": []})
            rows["keys"] += batch["key"]
            rows["captions"] += batch["captions"]
            rows["mean"] += list(mean.detach().cpu())
            rows["std"] += list(std.detach().cpu())
            kept = {name: batch[name] for name in SIZE_CONDITIONING if name in batch}
            for name, tensor in {**kept, **(extras_fn(batch) if extras_fn else {})}.items():
                rows.setdefault(name, []).extend(tensor.detach().cpu())
            while len(rows["keys"]) >= cache.shard_size:
                shards.append(_write_pending(cache, number, rows, cache.shard_size))
                number += 1
            bar.update(len(batch["key"]))
    for _, rows in sorted(pending.items()):
        if rows["keys"]:
            shards.append(_write_pending(cache, number, rows, len(rows["keys"])))
            number += 1
    if not shards:
        raise DataError(f"nothing to cache: no readable samples ({dataset.stats.summary()})")
    cache.finish(shards)
    return cache


def _write_pending(cache: LatentCache, number: int, pending: dict[str, list], count: int) -> Shard:
    taken = {name: values[:count] for name, values in pending.items()}
    for values in pending.values():
        del values[:count]
    tensors = {name: torch.stack(values) for name, values in taken.items() if name not in ("keys", "captions")}  # (N, ...)
    mean, std = tensors.pop("mean"), tensors.pop("std")
    return cache.write_shard(number, taken["keys"], taken["captions"], mean, std, tensors)


def _caching_loader(dataset, done: set[str], batch_size: int, num_workers: int) -> DataLoader:
    """Batches of every sample (all processes'), in fixed order, but those in `done`, with
    all their captions: {"pixels", "captions", "key"}; unreadable samples dropped."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        view = dataset.caching_view(done)
        if getattr(dataset, "buckets", None) is not None:  # a bucketed stream: batches of one shape
            return DataLoader(GroupedByShape(view, batch_size), batch_size=None, num_workers=num_workers, collate_fn=collate_samples)
        return DataLoader(view, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_samples)
    view = dataset.caching_view()
    todo = [position for position in range(len(view)) if view.key(position) not in done]
    plan = getattr(dataset, "buckets", None)
    if plan is None:
        return DataLoader(view, batch_size=batch_size, sampler=todo, num_workers=num_workers, collate_fn=collate_samples)
    # Aspect-ratio buckets: a batch of one bucket (the pixels of a batch are stacked).
    by_bucket: dict[int, list[int]] = {}
    for position in todo:
        if plan.of[position] >= 0:
            by_bucket.setdefault(plan.of[position], []).append(position)
    batches = [group[i : i + batch_size] for _, group in sorted(by_bucket.items()) for i in range(0, len(group), batch_size)]
    return DataLoader(view, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_samples)


def _cache_total(dataset) -> Optional[int]:
    indices = getattr(dataset, "indices", None)
    return len(indices) if indices is not None else None


# ----------------------------------------------------------------------------- reading for training


class CachedLatentDataset(torch.utils.data.Dataset):
    """dataset[(epoch, position)] -> {"latent_mean": (C, h, w), "latent_std": (C, h, w),
    "caption": str, "key": str, and the cache's extras by their names} from a complete cache. The
    cache keeps every caption as written; one is drawn per epoch, its tags rearranged
    (`captions`, data.captions) and dropout applied here, at read time, so that cached samples
    get a fresh caption every epoch: the same one an image dataset of the same seed gives.
    Latents are the unscaled posterior: sample with mean + std * noise, then multiply by
    the VAE's scaling factor. Batched like the image datasets (ldm.data.make_batches); with
    `bucketed` (latents of aspect-ratio buckets, several shapes) one shape per batch."""

    def __init__(
        self, cache: LatentCache, caption_dropout: float = 0.1, seed: int = 0, captions: Optional[CaptionSettings] = None, bucketed: bool = False
    ):
        super().__init__()
        self.cache = cache
        self.sample_keys = sorted(cache.keys())  # sorted: independent of the build order
        self.draw_caption = CaptionDraw(captions or CaptionSettings(), seed, caption_dropout)
        # Latents of aspect-ratio buckets: batched one latent shape at a time (ldm.data.batches.BucketBatches).
        self.buckets: Optional[BucketPlan] = None
        if bucketed:
            shapes = cache.latent_shapes()
            self.buckets = plan_of_sizes([(shapes[key][-1], shapes[key][-2]) for key in self.sample_keys])

    def __len__(self) -> int:
        return len(self.sample_keys)

    def __getitem__(self, item: Item) -> dict:
        epoch, position = split_item(item)
        key = self.sample_keys[position]
        mean, std = self.cache.get(key)
        caption = self.draw_caption(self.cache.captions(key), epoch, key)
        return {"latent_mean": mean, "latent_std": std, "caption": caption, "key": key, **self.cache.extras(key)}
