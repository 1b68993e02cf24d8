"""A folder of images (searched recursively) with captions from, in order of precedence:
  1. a COCO captions JSON (data.coco_captions): only its captions are used;
  2. metadata.jsonl / metadata.csv anywhere in the tree, with `file_name` (relative to
     the metadata file's folder) and a caption column (data.caption_column, "text"),
     as in Hugging Face's imagefolder layout;
  3. sidecars beside NAME.jpg: NAME.txt and numbered ones, NAME.1.txt, NAME.2.txt, ... (each a
     caption of its own, one drawn per epoch; a NAME.1.txt that is the sidecar of an image
     NAME.1.jpg is that image's, not NAME.jpg's);
  4. data.caption_from_folder: {folder name: caption} for the image's parent folder.
Images without a caption are skipped (and counted). NAME.mask.png files are masks (data.masked_loss),
never images of their own. All captions are read here, before
training, so that a broken caption file stops the run at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ldm.data.captions import read_coco_captions, read_metadata, read_text
from ldm.data.config import DataConfig
from ldm.data.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MASK_SUFFIX = ".mask.png"  # NAME.mask.png: the loss mask of NAME.jpg (data.masked_loss)
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
NUMBERED_SIDECAR = re.compile(r"^(?P<stem>.+)\.(?P<number>\d+)\.txt$")


@dataclass
class FolderRecords:
    root: Path
    files: list[str]  # POSIX paths relative to root, sorted; also the sample keys
    captions: list[list[str]]  # per file; [] when it has none

    def __len__(self) -> int:
        return len(self.files)

    def key(self, index: int) -> str:
        return self.files[index]

    def read(self, index: int) -> tuple[Path, list[str]]:
        return self.root / self.files[index], self.captions[index]

    def identity(self) -> str:
        """Changes when a file is added, removed, rewritten or recaptioned."""
        digest = hashlib.sha256(str(self.root.resolve()).encode())
        for name, captions in zip(self.files, self.captions):
            stat = (self.root / name).stat()
            digest.update(json.dumps([name, stat.st_size, stat.st_mtime_ns, captions]).encode())
        return digest.hexdigest()


def load_image_folder(config: DataConfig) -> FolderRecords:
    root = Path(config.path)
    files, others = folder_files(config.path)
    captions = _captions(root, files, others, config)
    if not any(captions):
        raise DataError(
            f"no captions found for the {len(files)} images in {root}: give each image a NAME.txt beside it, "
            f"a metadata.jsonl/.csv with file_name and {config.caption_column} columns, a COCO captions JSON "
            "in data.coco_captions, or data.caption_from_folder ({folder name: caption})"
        )
    return FolderRecords(root, files, captions)


def folder_files(path: str, setting: str = "data.path") -> tuple[list[str], set[str]]:
    """(image files, other files) of the folder `path` as _walk finds them; DataError naming
    `setting` when it is missing, not a folder, or holds no image."""
    root = Path(path)
    if not path or not root.exists():
        raise DataError(f"{setting} does not exist: {root}")
    if not root.is_dir():
        raise DataError(f"{setting} is not a folder of images: {root}")
    files, others = _walk(root)
    if not files:
        raise DataError(f"no images found in {root} (searched recursively for {', '.join(IMAGE_SUFFIXES)})")
    return files, others


def _walk(root: Path) -> tuple[list[str], set[str]]:
    """(image files, other files) as POSIX paths relative to root, images sorted; hidden
    files and folders (.git, .cache, ...) are left out."""
    images, others = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        relative = Path(folder).relative_to(root)
        for name in names:
            if name.startswith("."):
                continue
            path = (relative / name).as_posix()
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.lower().endswith(MASK_SUFFIX):
                images.append(path)
            else:
                others.add(path)
    return sorted(images), others


def _captions(root: Path, files: list[str], others: set[str], config: DataConfig) -> list[list[str]]:
    if config.coco_captions:
        return _coco_captions(Path(config.coco_captions), files)
    known: dict[str, list[str]] = {}
    for metadata in sorted(p for p in others if PurePosixPath(p).name in METADATA_FILES):
        folder = PurePosixPath(metadata).parent
        for name, captions in read_metadata(root / metadata, config.caption_column).items():
            known[(folder / name).as_posix()] = captions
    sidecars = _sidecars(files, others)
    return [_caption_of(root, file, sidecars, known, config.caption_from_folder) for file in files]


def _sidecars(files: list[str], others: set[str]) -> dict[str, list[str]]:
    """Image stem ('part/cat') -> its caption files: 'part/cat.txt', then 'part/cat.N.txt' by N.
    A numbered file that is the plain sidecar of another image (cat.1.txt beside cat.1.jpg) is that one's."""
    stems = {PurePosixPath(file).with_suffix("").as_posix() for file in files}
    numbered: dict[str, list[tuple[int, str]]] = {}
    for other in others:
        match = NUMBERED_SIDECAR.match(other)
        if match and match["stem"] in stems and other.removesuffix(".txt") not in stems:
            numbered.setdefault(match["stem"], []).append((int(match["number"]), other))
    sidecars = {stem: [f"{stem}.txt"] for stem in stems if f"{stem}.txt" in others}
    for stem, entries in numbered.items():
        sidecars[stem] = sidecars.get(stem, []) + [name for _, name in sorted(entries)]
    return sidecars


def _caption_of(root: Path, file: str, sidecars: dict[str, list[str]], known: dict[str, list[str]], from_folder: dict) -> list[str]:
    if file in known:
        return known[file]
    stem = PurePosixPath(file).with_suffix("").as_posix()
    if stem in sidecars:
        return [text for text in (read_text(root / sidecar) for sidecar in sidecars[stem]) if text]
    folder = PurePosixPath(file).parent.name
    return [from_folder[folder]] if folder in from_folder else []


def _coco_captions(path: Path, files: list[str]) -> list[list[str]]:
    """COCO file names are matched to the folder's files by relative path, or else by
    base name (COCO's file names carry no folder)."""
    listed = set(files)
    by_base: dict[str, str] = {}
    for file in files:
        by_base.setdefault(PurePosixPath(file).name, file)
    by_file: dict[str, list[str]] = {}
    for name, captions in read_coco_captions(path).items():
        file = name if name in listed else by_base.get(PurePosixPath(name).name)
        if file is not None:
            by_file[file] = captions
    return [by_file.get(file, []) for file in files]
