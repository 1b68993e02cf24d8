"""OpenAI CLIP's tokenizer as a transformers CLIPTokenizer, built offline from the BPE
vocabulary open_clip ships (the same vocabulary SD 1.x's tokenizer folder holds)."""

from __future__ import annotations

import json
import tempfile
from functools import cache
from pathlib import Path

START, END = "<|startoftext|>", "<|endoftext|>"


@cache
def clip_tokenizer(max_length: int = 77, pad_token: str = END):
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    vocab = dict(bpe.encoder)
    # open_clip names the two marks differently; the ids are CLIP's (49406, 49407).
    vocab[START] = vocab.pop(bpe.decoder[bpe.sot_token_id])
    vocab[END] = vocab.pop(bpe.decoder[bpe.eot_token_id])
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        # SD 1.x pads with the end mark (as openai/clip-vit-large-patch14's tokenizer), SD 2.x with "!".
        return CLIPTokenizer(
            str(Path(folder) / "vocab.json"),
            str(Path(folder) / "merges.txt"),
            bos_token=START,
            eos_token=END,
            pad_token=pad_token,
            model_max_length=max_length,
        )
