"""The `data:` section of a training config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union


@dataclass
class CaptionSettings:
    """data.captions: what is done to the caption drawn for a sample (one of its captions, drawn
    anew each epoch) before caption dropout; ldm.data.caption_transforms. All off by default."""

    shuffle_tags: bool = False  # the tags after the first keep_tokens in a new order each epoch
    keep_tokens: int = 0  # the first N tags stay first, in order, and are never dropped (kohya's)
    tag_separator: str = ","  # what splits a caption into tags; tags are joined with it and a space
    trigger: str = ""  # a word or phrase put before every caption, as its own first tag
    tag_dropout: float = 0.0  # each tag but the kept ones is left out with this probability


@dataclass
class BucketSettings:
    """data.buckets as a mapping (ldm.data.buckets); a setting left out is derived from
    data.resolution R: area R*R, step 64 (8..64 for small R: a multiple of the VAE's factor 8),
    sides from R/2 to 2R."""

    area: Optional[int] = None  # pixels per bucket at most (width * height)
    min_side: Optional[int] = None
    max_side: Optional[int] = None
    step: Optional[int] = None  # every side is a multiple of this


@dataclass
class DataConfig:
    # imagefolder: images with sidecar .txt, metadata.jsonl/.csv (file_name, text) or COCO JSON
    # hf: a saved `datasets` dataset (load_from_disk) or local data files (parquet, arrow, ...)
    # webdataset: tar shards by brace pattern, local path, URL or `pipe:` command
    source: str = "imagefolder"
    path: str = ""
    coco_captions: Optional[str] = None  # imagefolder: a COCO captions JSON for the images
    image_column: str = "image"  # hf
    caption_column: str = "text"  # hf, imagefolder's metadata.jsonl/.csv, a webdataset JSON caption object
    # imagefolder: captions for images without one, by parent folder name
    # ({"n01440764": "a photo of a tench"}): class-labelled folders such as ImageNet's
    caption_from_folder: dict[str, str] = field(default_factory=dict)
    # Stage controlnet: each sample's control image, stored beside its image (cropped and
    # flipped with it): a column of an hf dataset, or a key of a webdataset sample ("control.png")
    control_column: str = ""  # hf
    control_key: str = ""  # webdataset
    image_key: str = "jpg;png;jpeg;webp"  # webdataset
    caption_key: str = "txt"  # webdataset: a text member, or a JSON one ("json") with a list of captions
    split: str = "train"  # hf
    resolution: int = 512  # pixels of the square crop
    crop: str = "center"  # center | random
    random_flip: bool = False
    # Aspect-ratio buckets instead of one square crop (ldm.data.buckets): true for the defaults
    # derived from data.resolution, or {area, min_side, max_side, step}. Training split only.
    buckets: Union[bool, BucketSettings] = False
    caption_dropout: float = 0.1  # probability that a caption becomes "" (unconditional)
    captions: CaptionSettings = field(default_factory=CaptionSettings)  # tag shuffling, trigger, tag dropout
    num_workers: int = 0
    shuffle_buffer: int = 1000  # webdataset
    # imagefolder/hf: the last N samples (in sha256-of-key order) kept for evaluation,
    # never trained on; read with split "validation". At most 1 sample in 5 is held out,
    # so a small folder still trains on most of its pictures; ldm-train says the split.
    validation: int = 0
    # A text file of sample keys that no source reads (ldm.data.exclude; `ldm-data dedupe` writes
    # one): paths relative to data.path, hf row numbers or webdataset __key__s, one per line.
    exclude: str = ""
    # Stages text2img and lora: a mask per sample weighs its loss (kohya's masked_loss; white
    # counts, black does not; ldm.training.loss_masks). Masks are NAME.mask.png beside an image
    # folder's NAME.jpg, or with mask_dir set KEY.png there (KEY: the sample's key without its
    # suffix; any source). A sample without a mask counts everywhere.
    masked_loss: bool = False
    mask_dir: str = ""
