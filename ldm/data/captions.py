"""Captions: reading them (sidecar .txt, metadata.jsonl/.csv, COCO JSON), choosing one
when an image has several, and caption dropout.

Readers return {file name: [captions]} and raise DataError, naming the file (and line),
for anything unreadable: a broken caption file stops the run before training starts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional

import torch

from ldm.data.errors import DataError


def choose_caption(captions: list[str], generator: Optional[torch.Generator]) -> str:
    """One of an image's captions: drawn with `generator` (a new draw each epoch when the
    generator is seeded per epoch), or the first one without a generator (evaluation)."""
    if generator is None or len(captions) == 1:
        return captions[0]
    return captions[int(torch.randint(len(captions), (), generator=generator))]


def drop_caption(caption: str, probability: float, generator: torch.Generator) -> str:
    """"" with `probability`: the model also learns the unconditional prediction that
    classifier-free guidance needs."""
    return "" if float(torch.rand((), generator=generator)) < probability else caption


def clean_captions(value: Any) -> list[str]:
    """A caption field (a string or a list of strings) -> its non-empty captions."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def member_captions(value: Any, key: str, column: str) -> list[str]:
    """A webdataset sample's caption member (`key`, bytes) -> its captions: a text member is one
    caption; a JSON one ("json", "captions.json") a string, a list of them, or an object whose
    `column` holds either. [] for none, or for JSON that does not parse (counted as no caption)."""
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value or "")
    if not key.endswith("json"):
        return clean_captions(text)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return []
    return clean_captions(parsed.get(column) if isinstance(parsed, dict) else parsed)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read caption file {path}: {_reason(error)}") from None


def read_metadata(path: Path, caption_column: str) -> dict[str, list[str]]:
    """A Hugging Face imagefolder metadata.jsonl or metadata.csv: file_name -> captions."""
    rows = _jsonl_rows(path) if path.suffix == ".jsonl" else _csv_rows(path)
    captions: dict[str, list[str]] = {}
    for line, row in rows:
        if not isinstance(row, dict) or "file_name" not in row:
            raise DataError(f"{path}:{line}: a row without 'file_name'")
        if caption_column not in row:
            columns = ", ".join(map(str, row))
            raise DataError(f"{path}:{line}: no caption column '{caption_column}' (columns: {columns}); set data.caption_column")
        captions[str(row["file_name"])] = clean_captions(row[caption_column])
    return captions


def _jsonl_rows(path: Path):
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {_reason(error)}") from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None


def _csv_rows(path: Path):
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read {path}: {_reason(error)}") from None
    return enumerate(rows, start=2)  # line 1 is the header


def read_coco_captions(path: Path) -> dict[str, list[str]]:
    """A COCO captions JSON: images[].file_name -> captions of annotations[].image_id,
    in file order."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        names = {image["id"]: image["file_name"] for image in document["images"]}
        captions: dict[str, list[str]] = {name: [] for name in names.values()}
        for annotation in document["annotations"]:
            captions[names[annotation["image_id"]]] += clean_captions(annotation["caption"])
    except FileNotFoundError:
        raise DataError(f"COCO captions file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read COCO captions {path}: {_reason(error)}") from None
    except (KeyError, TypeError) as error:
        expected = "images[].id/file_name, annotations[].image_id/caption"
        raise DataError(f"{path} is not a COCO captions file ({expected}): missing {error}") from None
    return captions


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error).splitlines()[0]
