"""Error messages as an API client reads them. The library words its errors for the command
line ("try a lower --cfg") and names files by their paths; a client of the server sends
`cfg_scale` and has no business knowing where the server keeps its LoRAs and models."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from ldm.settings import Settings, option_of

# The command line's flag -> the API's field, for every setting that has both.
FLAG_TO_FIELD = {
    option_of(each).flag: option_of(each).api
    for each in dataclasses.fields(Settings)
    if option_of(each).flag and option_of(each).api
}
_FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?![\w-])")


def client_message(message: str, folders: dict[str, str]) -> str:
    """`message` with the flags of FLAG_TO_FIELD named as API fields, and the server's `folders`
    (path -> what to call it instead) hidden: a file inside one is named relative to it."""
    message = _FLAG.sub(lambda match: FLAG_TO_FIELD.get(match.group(1), match.group(1)), message)
    spellings = {}
    for folder, label in folders.items():
        for spelling in {str(folder), str(Path(folder).resolve())}:
            if spelling.rstrip(os.sep):
                spellings[spelling.rstrip(os.sep)] = label
    for spelling in sorted(spellings, key=len, reverse=True):  # the longest first: nested folders
        message = message.replace(spelling + os.sep, "").replace(spelling, spellings[spelling])
    return message
