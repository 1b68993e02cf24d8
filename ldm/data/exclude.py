"""`data.exclude`: a text file naming samples that no source reads (duplicates found by
`ldm-data dedupe`, images a person rejected).

One sample key per line, as the source names its samples: the path relative to data.path
(imagefolder, e.g. `n01440764/img_17.JPEG`), the row number (hf) or the sample's `__key__`
(webdataset). Blank lines are ignored; nothing else is interpreted (no comments), so any
key can be listed. A name that matches no sample is counted and reported in one line;
a list of which not one name matches is an error (it was written for other data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ldm.data.errors import DataError
from ldm.files import write_file_atomic

KEY_KINDS = "paths relative to data.path (imagefolder), row numbers (hf), __key__ (webdataset)"


@dataclass(frozen=True)
class ExclusionList:
    path: str
    names: frozenset[str]

    def digest(self) -> str:
        """Changes when the set of names changes (part of the latent cache key)."""
        return hashlib.sha256("\n".join(sorted(self.names)).encode()).hexdigest()


@dataclass(frozen=True)
class Exclusion:
    """What an exclusion list did to the samples of a map-style source."""

    kept: list[int]  # indices of the samples still read, in order
    excluded: int  # samples the list names
    unmatched: int  # names that match no sample
    path: str
    digest: str  # ExclusionList.digest

    def summary(self) -> str:
        """'3 excluded (data.exclude dups.txt; 1 name in it matches no sample)'."""
        if not self.unmatched:
            return f"{self.excluded} excluded (data.exclude {self.path})"
        names = "1 name in it matches" if self.unmatched == 1 else f"{self.unmatched} names in it match"
        return f"{self.excluded} excluded (data.exclude {self.path}; {names} no sample)"


def read_exclusion_list(path: str) -> ExclusionList:
    """The names listed in `path`; DataError (one line) if it cannot be read as UTF-8 text."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"data.exclude does not exist: {path}") from None
    except IsADirectoryError:
        raise DataError(f"data.exclude is a folder, not a list of sample keys: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read data.exclude {path}: {getattr(error, 'strerror', None) or error}") from None
    return ExclusionList(path, frozenset(line for line in text.splitlines() if line.strip()))


def exclude_keys(listed: ExclusionList, keys: Sequence[str]) -> Exclusion:
    """The samples (by key, in source order) that `listed` leaves. DataError when the list
    names samples but none of them is among `keys`."""
    kept = [index for index, key in enumerate(keys) if key not in listed.names]
    excluded = len(keys) - len(kept)
    if listed.names and not excluded:
        example = min(listed.names)
        raise DataError(
            f"none of the {len(listed.names)} names in data.exclude {listed.path} is a sample of this data "
            f"(e.g. {example!r}); list sample keys: {KEY_KINDS}"
        )
    unmatched = len(listed.names) - len(listed.names.intersection(keys))
    return Exclusion(kept, excluded, unmatched, listed.path, listed.digest())


def write_exclusion_list(path: Path, keys: Sequence[str]) -> None:
    """Writes `keys` one per line, crash-safely (the old list or the new one, never half)."""
    for key in keys:
        if "\n" in key or "\r" in key or not key.strip():
            raise DataError(f"sample key {key!r} cannot be written to an exclusion list (one key per line)")
    write_file_atomic(path, "".join(f"{key}\n" for key in keys))
