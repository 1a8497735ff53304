"""Import a file of scripts/ (not a package) as a module, to call its functions in-process."""

from __future__ import annotations

import importlib.util
import sys

from conftest import REPO_ROOT


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
