"""One error base: every error class ldm defines derives from ldm.errors.LdmError, so a
caller (the HTTP server, a notebook) catches all of ldm's own errors with one clause."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

from ldm.errors import LdmError

PACKAGE = Path(__file__).resolve().parents[1] / "ldm"


def error_classes():
    """(module, class name) of every public class in ldm that derives from an exception class
    (a private one, like the server's interrupt signal, is control flow, not an error)."""
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(file.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(file.read_text()).body:
            bases = [ast.unparse(base) for base in getattr(node, "bases", [])]
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(b.endswith(("Error", "Exception")) for b in bases):
                found.append((module, node.name))
    return found


def test_every_ldm_error_derives_from_ldm_error():
    classes = error_classes()
    assert {"ModelError", "ConfigError", "CheckpointError", "DataError", "GenerationError", "TrainingError",
            "ImageError", "UsageError"} <= {name for _, name in classes}
    for module, name in classes:
        error = getattr(importlib.import_module(module), name)
        assert issubclass(error, LdmError), f"{module}.{name} does not derive from LdmError"


def test_the_error_base_imports_nothing_heavy():
    code = "import sys, ldm.errors; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'PIL')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(PACKAGE.parent)}).stdout
    assert out.strip() == "[]"
