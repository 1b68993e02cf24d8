"""tools/ are scripts, not package modules: tests load them by path with this."""

import importlib.util
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(script: str, module_name: str):
    """tools/<script> as a module registered in sys.modules as `module_name` (worker processes
    unpickle its functions by module name; each test file gives its own name)."""
    spec = importlib.util.spec_from_file_location(module_name, TOOLS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
