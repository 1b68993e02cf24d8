"""Evaluation prompts: scene captions paired with the attributes they state.

A prompt is the caption of a scene (`ldm.scenes.generator.caption`), so it describes exactly
that scene: captions always name the time of day and the setting, and name every present
feature (mountains, trees with their count, sun or moon with its position, clouds, house),
never an absent one. Only what a prompt states is scored: "a lake at dawn" asserts
time_of_day=dawn and setting=lake and nothing else, so a model that adds mountains to it is
not marked wrong; "two trees in a meadow at noon" also asserts trees=2.

"seen" prompts use the (setting, time of day) pairs of the training split; "heldout" ones
use only the pairs in HELD_OUT, which a model trained on the "train" split never saw
together.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ldm.scenes.generator import CONCEPTS, HELD_OUT, SceneAttributes, caption, sample_attributes, split_pairs
from ldm.scenes.attribute_classifier import scene_labels

# "windmill": the seen pairs' prompts with a windmill added: a taught concept's test.
PROMPT_SETS = ("seen", "heldout", "both", "windmill")
_SPLIT_OF_SET = {"seen": ["train"], "heldout": ["heldout"], "both": ["train", "heldout"], "windmill": ["train"]}


def stated_attributes(attrs: SceneAttributes) -> dict[str, str]:
    """The classifier labels a caption of `attrs` asserts (see the module docstring)."""
    labels = scene_labels(attrs)
    stated = ["time_of_day", "setting"]
    stated += ["mountains"] * attrs.mountains + ["trees"] * (attrs.trees > 0)
    stated += ["celestial", "celestial_position"] if attrs.celestial else []
    stated += ["clouds"] * attrs.clouds + ["house"] * attrs.house + ["windmill"] * attrs.windmill
    return {name: labels[name] for name in stated}


@dataclass(frozen=True)
class EvalPrompt:
    text: str
    scene: SceneAttributes  # what the text describes: named features present, all others absent

    @property
    def split(self) -> str:
        """'heldout' when its (setting, time of day) pair is held out of training, else 'seen'."""
        return "heldout" if (self.scene.setting, self.scene.time_of_day) in HELD_OUT else "seen"

    @property
    def asserts(self) -> dict[str, str]:
        return stated_attributes(self.scene)

    def to_dict(self) -> dict:
        return {"prompt": self.text, "split": self.split, "asserts": self.asserts, "attributes": self.scene.to_dict()}


def _scene_for_pair(setting: str, time_of_day: str, rng: random.Random) -> SceneAttributes:
    """Features drawn as the dataset draws them, for a given pair (by rejection: attributes
    are cheap, and this keeps one definition of how scenes are sampled)."""
    while True:
        attrs = sample_attributes(rng, "all")
        if (attrs.setting, attrs.time_of_day) == (setting, time_of_day):
            return attrs


def build_prompts(prompt_set: str = "both", per_pair: int = 2, seed: int = 0) -> list[EvalPrompt]:
    """`per_pair` prompts for every (setting, time of day) pair of the set, in a fixed order.

    The first prompt of a pair names only the pair ("a lake at dawn"); the others add
    features drawn as the dataset draws them. The same arguments give the same prompts.
    """
    if prompt_set not in PROMPT_SETS:
        raise ValueError(f"prompt set must be one of {PROMPT_SETS}, got {prompt_set!r}")
    if per_pair < 1:
        raise ValueError(f"per_pair must be at least 1, got {per_pair}")
    prompts = []
    for split in _SPLIT_OF_SET[prompt_set]:
        for setting, time_of_day in split_pairs(split):
            for k in range(per_pair):
                rng = random.Random(f"eval-prompts:{seed}:{setting}:{time_of_day}:{k}")
                scene = SceneAttributes(time_of_day, setting) if k == 0 else _scene_for_pair(setting, time_of_day, rng)
                if prompt_set in CONCEPTS:
                    scene = replace(scene, **{prompt_set: True})
                prompts.append(EvalPrompt(caption(scene, rng), scene))
    return prompts


def read_prompt_file(path: str | Path) -> list[EvalPrompt]:
    """Prompts from a JSON-lines file: one object per line with the text under "prompt" (or
    "text", so a make_scenes metadata.jsonl works as it is) and the scene it describes under
    "attributes" (SceneAttributes fields; time_of_day and setting required, features absent
    when left out). The file evaluate.py writes as prompts.jsonl reads back the same."""
    known = {f.name for f in fields(SceneAttributes)}
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error.msg})") from None
        text = record.get("prompt", record.get("text")) if isinstance(record, dict) else None
        attributes = record.get("attributes") if isinstance(record, dict) else None
        if not isinstance(text, str) or not isinstance(attributes, dict):
            raise ValueError(f'{where}: expected {{"prompt": TEXT, "attributes": {{...}}}}')
        unknown = sorted(set(attributes) - known)
        if unknown:
            raise ValueError(f"{where}: unknown attribute {unknown[0]!r}; known: {', '.join(sorted(known))}")
        try:
            prompts.append(EvalPrompt(text, SceneAttributes(**attributes)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: {error}") from None
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return prompts
