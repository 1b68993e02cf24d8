"""Prompt editing and alternation: a prompt -> the prompt text at each sampling step.

    [from:to:when]   `from` until step `when`, then `to`
    [to:when]        nothing until step `when`, then `to`
    [from::when]     `from` until step `when`, then nothing
    [a|b|c]          a at step 1, b at step 2, c at step 3, a at step 4, ...

As A1111 (>= 1.6, its default timeline) reads them: `when` with a decimal point is a share of
the steps (0.25 of 20 steps: step 5; 2.5: past the end, so `from` throughout), without one a
step number; a switch at step 0 or below means `to` throughout. They nest (`a[b:[c:d:2]:1]e`)
and may hold weights (`[(a:2):3]`); brackets that form none of these are text, and a prompt
with a `|` outside any brackets (or ending in a lone backslash) is all text, as A1111's
grammar fails on it. The result is A1111's list of (last step, text): text k conditions the
steps up to its last one, 1-based as A1111 writes them (the sampling side decides how steps
count: ldm.diffusion.conditioning_schedule)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

_PLAIN = re.compile(r"(?:[^\\\[\]():|]|\\.)+", re.S)
_NUMBER = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*\]")


@dataclass
class Scheduled:
    before: Optional["Node"]
    after: "Node"
    when: str  # as written: a decimal point makes it a share of the steps


@dataclass
class Alternate:
    options: list["Node"]


Node = Union[str, list, Scheduled, Alternate]  # a list is a sequence of nodes


class _NotParsed(Exception):
    pass


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """[(last step, text), ...] for a run of `steps` steps; the last entry's step is `steps`."""
    try:
        tree = _Parser(prompt).top()
    except _NotParsed:
        return [(steps, prompt)]
    boundaries = {steps}
    _collect(tree, steps, boundaries)
    return [(step, _text_at(tree, step, steps)) for step in sorted(boundaries)]


def switch_step(when: str, steps: int) -> int:
    """The step after which a `[from:to:when]` switches."""
    value = float(when) * steps if "." in when else float(when)
    return min(steps, int(value))


def _collect(node: Node, steps: int, boundaries: set[int]) -> None:
    if isinstance(node, list):
        for child in node:
            _collect(child, steps, boundaries)
    elif isinstance(node, Scheduled):
        when = switch_step(node.when, steps)
        if when >= 1:
            boundaries.add(when)
        for child in (node.before, node.after):
            if child is not None:
                _collect(child, steps, boundaries)
    elif isinstance(node, Alternate):
        boundaries.update(range(1, steps + 1))
        for child in node.options:
            _collect(child, steps, boundaries)


def _text_at(node: Node, step: int, steps: int) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "".join(_text_at(child, step, steps) for child in node)
    if isinstance(node, Scheduled):
        chosen = node.before if step <= switch_step(node.when, steps) else node.after
        return "" if chosen is None else _text_at(chosen, step, steps)
    return _text_at(node.options[(step - 1) % len(node.options)], step, steps)


class _Parser:
    """Recursive descent over A1111's grammar: at the top level a bracket that opens nothing
    well-formed is a character; inside brackets everything must be well-formed."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def top(self) -> list:
        nodes: list = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in "([":
                start = self.pos
                try:
                    nodes.append(self.bracketed())
                    continue
                except _NotParsed:
                    self.pos = start
            if char in "([]):":
                nodes.append(char)
                self.pos += 1
            else:
                nodes.append(self.plain())  # fails on `|` and a lone trailing backslash
        return nodes

    def prompt(self) -> list:
        """Text and well-formed brackets, up to one of `)]:|` or the end."""
        nodes: list = []
        while self.pos < len(self.text) and self.text[self.pos] not in ")]:|":
            nodes.append(self.bracketed() if self.text[self.pos] in "([" else self.plain())
        return nodes

    def plain(self) -> str:
        match = _PLAIN.match(self.text, self.pos)
        if match is None:
            raise _NotParsed
        self.pos = match.end()
        return match.group(0)

    def expect(self, char: str) -> None:
        if self.text[self.pos : self.pos + 1] != char:
            raise _NotParsed
        self.pos += 1

    def bracketed(self) -> Node:
        opening = self.text[self.pos]
        self.pos += 1
        first = self.prompt()
        if opening == "(":
            if self.text[self.pos : self.pos + 1] == ":":
                self.pos += 1
                weight = self.prompt()
                self.expect(")")
                return ["(", first, ":", weight, ")"]
            self.expect(")")
            return ["(", first, ")"]
        following = self.text[self.pos : self.pos + 1]
        if following == "]":
            self.pos += 1
            return ["[", first, "]"]
        if following == "|":
            options = [first]
            while self.text[self.pos : self.pos + 1] == "|":
                self.pos += 1
                options.append(self.prompt())
            self.expect("]")
            return Alternate(options)
        self.expect(":")
        when = self.number()
        if when is not None:
            return Scheduled(None, first, when)
        second = self.prompt()
        self.expect(":")
        when = self.number()
        if when is None:
            raise _NotParsed
        return Scheduled(first, second, when)

    def number(self) -> Optional[str]:
        """A step number and the closing `]` (whitespace around it allowed), else None."""
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group(1)
