"""A1111's attention syntax: a prompt -> (text, weight) fragments, in BREAK-separated segments.

    (text)        weight x 1.1; nested brackets multiply: ((text)) x 1.21
    [text]        weight / 1.1
    (text:1.3)    weight x 1.3
    \\( \\) \\[ \\]  the bracket itself, as a character; \\\\ a backslash
    BREAK         the next text starts a new 75-token chunk

As A1111's parse_prompt_attention reads it (its documented examples are tests/prompts):
a bracket left open weighs everything after it; a closing bracket with nothing open is a
character; `(text:word)` is not a weight, so the colon and the word are text and the
parentheses weigh x 1.1; runs of equal weight are merged. Two departures, both where A1111
fails: a weight with two decimal points (`(a:1.2.3)`, a crash there) is text like a word,
and BREAK inside brackets still breaks (A1111 weighs the marker and then reads "BREAK" as a
word with a negative weight)."""

from __future__ import annotations

import re
from typing import NamedTuple

ROUND, SQUARE = 1.1, 1 / 1.1


class Fragment(NamedTuple):
    """A run of prompt text and the weight of its tokens."""

    text: str
    weight: float


_TOKENS = re.compile(
    r"""
    \\(?P<escaped>[()\[\]\\])?     # an escaped bracket or backslash (a lone backslash: dropped, as A1111)
    | (?P<open>[(\[])
    | :(?P<weight>[+-]?[.\d]+)\)   # (text:1.3)
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


def parse_attention(prompt: str) -> list[list[Fragment]]:
    """`prompt`'s fragments, one list per BREAK-separated segment (at least one fragment in
    all: an empty prompt is [[("", 1.0)]])."""
    parts: list[list] = []  # [text, weight] pairs; None marks a BREAK
    opened: dict[str, list[int]] = {"(": [], "[": []}  # where each open bracket's text starts

    def weigh(start: int, factor: float) -> None:
        for part in parts[start:]:
            if part is not None:
                part[1] *= factor

    for match in _TOKENS.finditer(prompt):
        token = match.group(0)
        if token.startswith("\\"):
            parts.append([match.group("escaped") or "", 1.0])
        elif match.group("open"):
            opened[token].append(len(parts))
        elif match.group("weight") is not None and opened["("] and _is_number(match.group("weight")):
            weigh(opened["("].pop(), float(match.group("weight")))
        elif token == ")" and opened["("]:
            weigh(opened["("].pop(), ROUND)
        elif token == "]" and opened["["]:
            weigh(opened["["].pop(), SQUARE)
        else:
            _add_text(parts, token)
    for start in opened["("]:
        weigh(start, ROUND)
    for start in opened["["]:
        weigh(start, SQUARE)
    return _segments(parts)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _add_text(parts: list, text: str) -> None:
    """Text, with a BREAK marker (None) wherever the word BREAK stands."""
    for i, piece in enumerate(_BREAK.split(text)):
        if i > 0:
            parts.append(None)
        parts.append([piece, 1.0])


def _segments(parts: list) -> list[list[Fragment]]:
    """BREAK-separated runs of fragments, neighbours of equal weight merged."""
    segments: list[list[Fragment]] = [[]]
    for part in parts:
        if part is None:
            segments.append([])
            continue
        text, weight = part
        current = segments[-1]
        if current and current[-1].weight == weight:
            current[-1] = Fragment(current[-1].text + text, weight)
        else:
            current.append(Fragment(text, weight))
    if segments == [[]]:
        return [[Fragment("", 1.0)]]
    return segments


def plain_fragments(prompt: str) -> list[list[Fragment]]:
    """The prompt as it is: one segment of one fragment of weight 1."""
    return [[Fragment(prompt, 1.0)]]


PROMPT_SYNTAXES = ("a1111", "plain")  # how a prompt is read: A1111's syntax, or the text as it is
DEFAULT_PROMPT_SYNTAX = "a1111"


def check_prompt_syntax(name: str) -> str:
    if name not in PROMPT_SYNTAXES:
        raise ValueError(f"prompt syntax must be one of {', '.join(PROMPT_SYNTAXES)}, got {name!r}")
    return name
