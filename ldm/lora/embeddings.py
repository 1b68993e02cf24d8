"""Textual-inversion embeddings a request's prompts name, from a folder of embedding files
(--embeddings-dir; by default the model folder's embeddings/), as AUTOMATIC1111 uses them:

- every file of the folder (and its subfolders) is offered; the prompt word is its name;
- a file that cannot be read, is for SDXL's two text encoders, or whose vectors are not as
  wide as the text encoder's token embeddings is skipped (with a note, and in
  GET /sdapi/v1/embeddings' "skipped"); a prompt that names one is an error saying why;
- the embeddings the prompt or negative prompt names are used for that request only, and the
  PNG records them as A1111 does: `TI hashes: "name: hash, ..."` (the hash: the first 12 hex
  digits of the file's sha256).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Optional

from ldm.lora.embedding_files import EMBEDDING_SUFFIXES, ONE_ENCODER, EmbeddingFile, EmbeddingFileError, read_embedding_file
from ldm.lora.refs import file_hash
from ldm.lora.token_embeddings import bundled_vectors
from ldm.models.components import Components
from ldm.models.prompt_embeddings import NameFinder, PromptEmbeddings
from ldm.models.weights import read_safetensors, write_safetensors

MODEL_EMBEDDINGS = "embeddings"  # a model folder's own embeddings: the default --embeddings-dir
NOTED_SKIPS = 3  # skipped files a note names; the rest are counted


def model_embeddings_dir(model_folder: str | Path) -> Optional[str]:
    """The model folder's embeddings/ (None when it has none)."""
    folder = Path(model_folder) / MODEL_EMBEDDINGS
    return str(folder) if folder.is_dir() else None


@dataclass
class Catalog:
    """A folder's embeddings for one model: those prompts can use, and those skipped (name -> why;
    the file too where it could be read)."""

    loaded: dict[str, EmbeddingFile] = field(default_factory=dict)
    skipped: dict[str, tuple[Optional[EmbeddingFile], str]] = field(default_factory=dict)


def embedding_paths(folder: str | Path) -> list[Path]:
    """The folder's embedding files, subfolders included (a link leading out of it is not)."""
    root = Path(folder).resolve()
    found = [path for path in Path(folder).rglob("*") if path.suffix.lower() in EMBEDDING_SUFFIXES]
    return sorted(path for path in found if path.is_file() and path.resolve().is_relative_to(root) and path.stat().st_size > 0)


def catalog(folder: Optional[str | Path], components: Components) -> Catalog:
    found = Catalog()
    if folder is None or not Path(folder).is_dir():
        return found
    width = components.first_text_encoder.token_embedding.weight.shape[1]
    encoders = len(components.text_encoders)
    for path in embedding_paths(folder):
        stat = path.stat()
        read = _read(str(path), stat.st_mtime_ns, stat.st_size)
        if isinstance(read, str):
            found.skipped[path.stem] = (None, read)
        elif read.for_two_encoders != (encoders == 2) or encoders > 2:
            found.skipped[read.name] = (read, f"{path}: {_made_for(read)}; this model has {encoders} text encoder(s)")
        elif read.for_two_encoders:
            found.skipped[read.name] = (read, f"{path}: an SDXL embedding; embeddings for two text encoders are not read yet")
        elif read.shape != width:
            found.skipped[read.name] = (read, f"{path}: its vectors are {read.shape} wide; this model's text encoder takes {width}")
        else:
            found.loaded[read.name] = read
    for name in found.loaded:  # a name also in an unusable file: the usable one stands
        found.skipped.pop(name, None)
    found.loaded = dict(sorted(found.loaded.items(), key=lambda item: item[0].lower()))  # A1111's order
    return found


def _made_for(read: EmbeddingFile) -> str:
    return "an SDXL embedding (clip_l and clip_g vectors, for two text encoders)" if read.for_two_encoders else "an embedding for one text encoder"


@lru_cache(maxsize=1024)
def _read(path: str, mtime_ns: int, size: int) -> EmbeddingFile | str:
    """A file read once while it stays the same (its time and size); a message when it cannot be."""
    try:
        return read_embedding_file(path)
    except EmbeddingFileError as error:
        return str(error)


@dataclass(frozen=True)
class RequestEmbeddings:
    """The embeddings a request's prompts name (`vocabulary`: how its text encoder reads them;
    None when they name none), and notes on the folder's skipped files."""

    vocabulary: Optional[PromptEmbeddings] = None
    used: tuple[EmbeddingFile, ...] = ()
    notes: tuple[str, ...] = ()

    def png_fields(self) -> dict[str, str]:
        """A1111's `TI hashes` (names without the commas and colons that would split it)."""
        if not self.used:
            return {}
        pairs = [f"{each.name.replace(':', '').replace(',', '')}: {each.hash}" for each in self.used]
        return {"TI hashes": ", ".join(pairs)}


def request_embeddings(components: Components, folder: Optional[str | Path], texts: list[str]) -> RequestEmbeddings:
    """What `texts` (the prompt, the negative prompt) use of `folder`'s embeddings; EmbeddingFileError
    (naming the file and why) when they name one that was skipped."""
    found = catalog(folder, components)
    if not found.loaded and not found.skipped:
        return RequestEmbeddings()
    finder = NameFinder(components.first_text_encoder, [*found.loaded, *found.skipped])
    names = list(dict.fromkeys(name for text in texts for name in finder.used_in(text)))
    for name in names:
        if name in found.skipped:
            raise EmbeddingFileError(f"the prompt names the embedding {name!r}, which cannot be used: {found.skipped[name][1]}")
    used = tuple(replace(found.loaded[name], hash=file_hash(found.loaded[name].path)) for name in names)
    vocabulary = PromptEmbeddings(components.first_text_encoder, {each.name: each.tensors[ONE_ENCODER] for each in used}) if used else None
    return RequestEmbeddings(vocabulary, used, _skip_notes(found))


def _skip_notes(found: Catalog) -> tuple[str, ...]:
    if not found.skipped:
        return ()
    reasons = [why for _, why in found.skipped.values()]
    more = f"; and {len(reasons) - NOTED_SKIPS} more" if len(reasons) > NOTED_SKIPS else ""
    return (f"{len(reasons)} embedding file(s) skipped: {'; '.join(reasons[:NOTED_SKIPS])}{more}",)


def export_bundled_embeddings(lora_file: str | Path, folder: str | Path, overwrite: bool = False) -> list[Path]:
    """Each embedding a LoRA file bundles (lora.tokens training) as a standalone A1111 file,
    folder/WORD.safetensors holding {"emb_params": (n, width)}: the same word, read the same way."""
    vectors = bundled_vectors(read_safetensors(lora_file))
    if not vectors:
        raise EmbeddingFileError(f"{lora_file} bundles no embeddings (no bundle_emb.* tensors)")
    targets = {word: Path(folder) / f"{word}.safetensors" for word in vectors}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise EmbeddingFileError(f"{existing[0]} exists; not replacing it")
    Path(folder).mkdir(parents=True, exist_ok=True)
    for word, path in targets.items():
        write_safetensors({"emb_params": vectors[word]}, path)
    return list(targets.values())
