"""The package's shape: the import-linter contracts hold, nothing imports the commands or
the tools, project imports sit at the top of their module, `--help` needs no torch, and
README's Layout section names every package and root module."""

import ast
import os
import re
import shutil
import subprocess
import tomllib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ldm"


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level) for every import in a file; TYPE_CHECKING blocks,
    which never run, are left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module, top_level))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            visit(child, top_level and not nested)

    visit(tree, True)
    return found


def package_files(under: Path = PACKAGE) -> list[Path]:
    return sorted(under.rglob("*.py"))


def test_import_contracts_hold():
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(lint_imports).exists():
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]'")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_library_module_imports_the_commands_or_the_tools():
    offenders = []
    for path in package_files():
        inside_cli = path.parent == PACKAGE / "cli"
        for module, _ in imports_of(path):
            if module == "tools" or module.startswith("tools.") or (module.startswith("ldm.cli") and not inside_cli):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders, "\n".join(offenders)


def test_project_imports_are_at_the_top_outside_the_commands():
    # Deferred project imports hide import cycles; only the commands defer (torch-heavy)
    # project modules, until their arguments are parsed.
    offenders = []
    for path in package_files():
        if path.parent == PACKAGE / "cli":
            continue
        for module, top_level in imports_of(path):
            if not top_level and (module == "ldm" or module.startswith("ldm.")):
                offenders.append(f"{path.relative_to(ROOT)} imports {module} inside a function")
    assert not offenders, "\n".join(offenders)


def console_scripts() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_every_command_answers_help_without_importing_torch(script):
    """What `--help` loads: torch alone takes over a second to import."""
    module, function = console_scripts()[script].split(":")
    code = (f"import sys; from {module} import {function} as main\n"
            f"try:\n    main(['--help'])\nexcept SystemExit as end:\n    assert end.code == 0, end.code\n"
            "print('torch' in sys.modules)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "usage:" in run.stdout and run.stdout.strip().endswith("False"), run.stdout[-300:]


def test_every_stage_name_has_a_stage():
    from ldm.training.config import STAGE_NAMES
    from ldm.training.stage_registry import STAGES

    assert tuple(STAGES) == STAGE_NAMES


def readme_layout() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Layout\n"):]
    end = section.find("\n## ", 1)
    return section if end < 0 else section[:end]


def test_readme_layout_lists_every_package_and_root_module():
    """README's Layout section names each folder and module at the ldm/ root, and nothing that is gone."""
    listed = set(re.findall(r"^(ldm/\S+)", readme_layout(), re.MULTILINE))
    present = {f"ldm/{path.name}/" for path in PACKAGE.iterdir() if path.is_dir() and not path.name.startswith(("_", "."))}
    present |= {f"ldm/{path.name}" for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}
    assert not present - listed, f"missing from README's Layout: {sorted(present - listed)}"
    assert not listed - present, f"README's Layout names what is not in ldm/: {sorted(listed - present)}"
