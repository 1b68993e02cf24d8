"""Hugging Face `datasets` as a source, offline: a dataset saved with save_to_disk
(load_from_disk), or local data files (parquet, arrow, json/jsonl, csv; a file, a
folder of them or a glob) read with load_dataset(format, data_files=...).

Images are read undecoded (bytes or path) so that our decoder, not the dataset's,
decides what is unreadable, converted or skipped.
"""

from __future__ import annotations

import contextlib
import glob
from pathlib import Path
from typing import Any

from ldm.data.captions import clean_captions
from ldm.data.config import DataConfig
from ldm.data.decode import ImageSource
from ldm.data.errors import DataError

FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}
SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class HFRecords:
    """Rows of a `datasets.Dataset`; sample keys are row numbers."""

    def __init__(self, dataset: Any, image_column: str, caption_column: str, origin: str, control_column: str = ""):
        self.dataset = dataset
        self.image_column, self.caption_column, self.control_column = image_column, caption_column, control_column
        self.has_control = bool(control_column)
        self.origin = origin

    def __len__(self) -> int:
        return len(self.dataset)

    def key(self, index: int) -> str:
        return str(index)

    def read(self, index: int) -> tuple[ImageSource, list[str]]:
        row = self.dataset[index]
        return _image_source(row[self.image_column]), clean_captions(row[self.caption_column])

    def control(self, index: int) -> ImageSource:
        """The row's control image (data.control_column), undecoded."""
        return _image_source(self.dataset[index][self.control_column])

    def identity(self) -> str:
        return f"{self.origin}:{self.dataset._fingerprint}"  # datasets' own content fingerprint


def _image_source(value: Any) -> ImageSource:
    """An undecoded Image feature ({"bytes", "path"}), raw bytes, or a path string."""
    if isinstance(value, dict):
        return value.get("bytes") or value.get("path") or b""
    return value if isinstance(value, (bytes, str)) else b""


def load_hf(config: DataConfig) -> HFRecords:
    import datasets

    path = Path(config.path)
    try:
        with offline(datasets):
            if path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS):
                dataset = _saved(datasets.load_from_disk(str(path)), config.split, path)
            else:
                files = data_files(config.path)
                dataset = datasets.load_dataset(file_format(files), data_files=files, split="train")
    except DataError:
        raise
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"cannot read Hugging Face dataset {path}: {first}") from None
    columns = _columns(dataset, config, path)
    return HFRecords(columns, config.image_column, config.caption_column, str(path.resolve()), config.control_column)


@contextlib.contextmanager
def offline(datasets: Any):
    """Never reach the Hub, whatever the environment says (HF_DATASETS_OFFLINE=1 behaviour)."""
    saved = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
    datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE = saved


def _saved(loaded: Any, split: str, path: Path) -> Any:
    if hasattr(loaded, "keys"):  # a DatasetDict: pick the configured split
        if split not in loaded:
            raise DataError(f"{path} has no split '{split}' (splits: {', '.join(loaded)}); set data.split")
        return loaded[split]
    return loaded


def data_files(pattern: str) -> list[str]:
    """A file, a folder of data files, or a glob -> sorted data files."""
    path = Path(pattern)
    if path.is_dir():
        files = [str(p) for p in sorted(path.iterdir()) if p.suffix in FORMATS]
    elif path.is_file():
        files = [str(path)]
    else:
        files = sorted(glob.glob(pattern, recursive=True))
    if not files:
        what = "no data files (.parquet, .arrow, .json, .jsonl, .csv) in" if path.is_dir() else "data.path does not exist:"
        raise DataError(f"{what} {pattern}")
    return files


def file_format(files: list[str]) -> str:
    formats = {FORMATS.get(Path(f).suffix.lower()) for f in files}
    if None in formats or len(formats) != 1:
        suffixes = ", ".join(sorted({Path(f).suffix or "(none)" for f in files}))
        raise DataError(f"data files must all be one of {', '.join(FORMATS)}; got {suffixes}: {files[0]}")
    return formats.pop()


def _columns(dataset: Any, config: DataConfig, path: Path) -> Any:
    import datasets

    wanted = {"image_column": config.image_column, "caption_column": config.caption_column}
    if config.control_column:
        wanted["control_column"] = config.control_column
    for setting, column in wanted.items():
        if column not in dataset.column_names:
            raise DataError(f"{path} has no column '{column}' (columns: {', '.join(dataset.column_names)}); set data.{setting}")
    if len(dataset) == 0:
        raise DataError(f"no images found in {path}: the dataset has no rows")
    dataset = dataset.select_columns(list(dict.fromkeys(wanted.values())))
    for column in (config.image_column, config.control_column):
        if column and isinstance(dataset.features[column], datasets.Image):
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
    return dataset
