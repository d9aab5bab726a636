"""No code path deserialises data with a format that can execute code (pickle and friends).

An AST check over every .py file of the project: importing pickle-like modules, calling
`torch.load` without a literal `weights_only=True`, `numpy.load(allow_pickle=...)` other
than False, any `yaml.load`-style call (use `yaml.safe_load`), `marshal.load(s)`, and
pickle in disguise (`joblib.load`, `pandas.read_pickle`). Aliases (`import torch as t`,
`from torch import load`) are resolved. The self-tests make sure every rule can fire.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKED_DIRS = ("worker", "producer", "common", "scripts", "tests")
SKIPPED_PARTS = {".venv", "__pycache__", "site-packages"}

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "jsonpickle", "shelve", "marshal"}
UNSAFE_CALLS = {
    "yaml.load": "yaml.load (use yaml.safe_load)",
    "yaml.load_all": "yaml.load_all (use yaml.safe_load_all)",
    "yaml.full_load": "yaml.full_load (use yaml.safe_load)",
    "yaml.full_load_all": "yaml.full_load_all (use yaml.safe_load_all)",
    "yaml.unsafe_load": "yaml.unsafe_load (use yaml.safe_load)",
    "yaml.unsafe_load_all": "yaml.unsafe_load_all (use yaml.safe_load_all)",
    "joblib.load": "joblib.load (pickle inside)",
    "pandas.read_pickle": "pandas.read_pickle",
}
# (path relative to the repo, rule) -> why it is acceptable there. Keep it empty if at all possible.
ALLOWED: dict[tuple[str, str], str] = {}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> full dotted name, from the module's imports."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:  # `import a.b` binds `a`; `import a.b as c` binds `c` to a.b
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    names[_module_root(alias.name)] = _module_root(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """`np.load` -> "numpy.load" (with `import numpy as np`); None for anything not a plain name chain."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def _has_keyword(call: ast.Call, name: str) -> bool:
    return any(k.arg in (name, None) for k in call.keywords)  # None: **kwargs may hold it


def _module_root(name: str) -> str:
    return name.split(".")[0]


def unsafe_uses(source: str, filename: str = "<snippet>") -> list[tuple[int, str]]:
    """(line, rule) of every unsafe deserialisation in `source`."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if _module_root(a.name) in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and _module_root(node.module) in UNSAFE_MODULES:
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Call):
            rule = _unsafe_call(node, aliases)
            if rule:
                found.append((node.lineno, rule))
    return sorted(found)


def _unsafe_call(call: ast.Call, aliases: dict[str, str]) -> str | None:
    name = _dotted(call.func, aliases)
    if name is None:
        return None
    if name in ("torch.load", "torch.serialization.load") and not _keyword_is(call, "weights_only", True):
        return f"{name} without weights_only=True"
    if name == "numpy.load" and _has_keyword(call, "allow_pickle") and not _keyword_is(call, "allow_pickle", False):
        return "numpy.load with allow_pickle"
    if name in ("__import__", "importlib.import_module") and call.args:
        module = call.args[0]
        if isinstance(module, ast.Constant) and isinstance(module.value, str) and _module_root(module.value) in UNSAFE_MODULES:
            return f"{name}({module.value!r})"
    if _module_root(name) in UNSAFE_MODULES:
        return f"{name} call"
    return UNSAFE_CALLS.get(name)


def project_files() -> list[Path]:
    return sorted(
        path for folder in CHECKED_DIRS for path in (REPO_ROOT / folder).rglob("*.py")
        if not SKIPPED_PARTS & set(path.relative_to(REPO_ROOT).parts)
    )


# ----------------------------------------------------------------------------- the check


def test_no_unsafe_deserialisation_in_the_project():
    files = project_files()
    assert len(files) > 50 and REPO_ROOT / "worker" / "inspection" / "models" / "weights.py" in files  # it looked where it should
    problems = []
    for path in files:
        relative = path.relative_to(REPO_ROOT).as_posix()
        for line, rule in unsafe_uses(path.read_text(encoding="utf-8"), relative):
            if (relative, rule) not in ALLOWED:
                problems.append(f"{relative}:{line}: {rule}")
    assert not problems, "unsafe deserialisation (data can execute code):\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- the rules can fire


@pytest.mark.parametrize(
    "source, rule",
    [
        ("import pickle", "import pickle"),
        ("import cPickle as p", "import cPickle"),
        ("import dill", "import dill"),
        ("import shelve", "import shelve"),
        ("from pickle import loads", "from pickle import"),
        ("from _pickle import Unpickler", "from _pickle import"),
        ("import pickle\npickle.loads(b'')", "pickle.loads call"),
        ("import importlib\nimportlib.import_module('pickle')", "importlib.import_module('pickle')"),
        ("__import__('marshal')", "__import__('marshal')"),
        ("import torch\ntorch.load('w.pth')", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('w.pth', weights_only=False)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('w.pth', weights_only=safe)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('w.pth', **options)", "torch.load without weights_only=True"),
        ("import torch as t\nt.load('w.pth')", "torch.load without weights_only=True"),
        ("from torch import load\nload('w.pth')", "torch.load without weights_only=True"),
        ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "numpy.load with allow_pickle"),
        ("import yaml\nyaml.load(text, Loader=yaml.SafeLoader)", "yaml.load (use yaml.safe_load)"),
        ("import yaml\nyaml.unsafe_load(text)", "yaml.unsafe_load (use yaml.safe_load)"),
        ("from yaml import full_load\nfull_load(text)", "yaml.full_load (use yaml.safe_load)"),
        ("import marshal\nmarshal.loads(b'')", "marshal.loads call"),
        ("import joblib\njoblib.load('m.joblib')", "joblib.load (pickle inside)"),
        ("import pandas as pd\npd.read_pickle('f.pkl')", "pandas.read_pickle"),
    ],
)
def test_each_rule_flags_its_pattern(source, rule):
    assert rule in [found for _, found in unsafe_uses(source)]


def test_safe_code_passes():
    safe = """
import json
import numpy as np
import torch
import yaml
from safetensors.torch import load_file

state = torch.load("w.pth", map_location="cpu", weights_only=True)
array = np.load("a.npy")
other = np.load("a.npy", allow_pickle=False)
config = yaml.safe_load(text)
meta = json.loads(raw)
weights = load_file("w.safetensors")
torch.save(model.state_dict(), "w.pth")  # writing is not the danger
text = "import pickle; torch.load(x)"  # strings are not code
model.load_state_dict(state)
"""
    assert unsafe_uses(safe) == []


def test_findings_name_the_line():
    assert unsafe_uses("import json\n\nimport torch\nx = torch.load(p)\n") == [(4, "torch.load without weights_only=True")]
