"""tools/ are scripts on the installed package: they reuse ldm.cli.common (one-line argument
errors, error reporting) and ldm.files, without sys.path edits or private copies."""

import re
from pathlib import Path

TOOLS = sorted((Path(__file__).resolve().parents[1] / "tools").glob("*.py"))


def test_tools_do_not_edit_sys_path():
    assert TOOLS
    assert [tool.name for tool in TOOLS if "sys.path" in tool.read_text()] == []


def test_tools_have_no_copies_of_shared_helpers():
    # Hand-written atomic replaces and error printers (scratch folders, mkdtemp, are fine).
    copies = re.compile(r"class \w+\(argparse\.ArgumentParser\)|mkstemp|os\.replace|\.rename\(|print\(f\"[^\"]*: error:")
    assert {tool.name: copies.findall(tool.read_text()) for tool in TOOLS if copies.search(tool.read_text())} == {}
