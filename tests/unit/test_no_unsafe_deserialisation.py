"""No code path deserialises data with a format that can execute code (pickle and friends).

Two checks share the job:

* ruff (`make lint`, configured in pyproject.toml) flags pickle-like modules and their calls
  (S301, S302 and the banned APIs of TID251: pickle, dill, shelve, marshal, joblib.load,
  pandas.read_pickle, yaml.full_load/unsafe_load/load_all ...) and `yaml.load` with an unsafe
  loader (S506). `test_ruff_flags_*` below makes sure the configuration keeps doing so.
* This AST check covers what ruff cannot express: `torch.load` without a literal
  `weights_only=True` (ruff has no such rule: S614 is not in ruff 0.17), `numpy.load` with
  `allow_pickle` other than False, and importing a pickle-like module by name
  (`__import__("pickle")`, `importlib.import_module("pickle")`). Aliases (`import torch as t`,
  `from torch import load`) are resolved. The self-tests make sure every rule can fire.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKED_DIRS = ("worker", "producer", "common", "infra", "scripts", "tests")
SKIPPED_PARTS = {".venv", "__pycache__", "site-packages", "target"}

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "jsonpickle", "shelve", "marshal"}
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
        if isinstance(node, ast.Call):
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
        if (
            isinstance(module, ast.Constant)
            and isinstance(module.value, str)
            and _module_root(module.value) in UNSAFE_MODULES
        ):
            return f"{name}({module.value!r})"
    return None


def project_files() -> list[Path]:
    return sorted(
        path
        for folder in CHECKED_DIRS
        for path in (REPO_ROOT / folder).rglob("*.py")
        if not SKIPPED_PARTS & set(path.relative_to(REPO_ROOT).parts)
    )


# ----------------------------------------------------------------------------- the check


def test_no_unsafe_deserialisation_in_the_project():
    files = project_files()
    assert (
        len(files) > 50 and REPO_ROOT / "worker" / "inspection" / "models" / "weights.py" in files
    )  # it looked where it should
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
        ("import importlib\nimportlib.import_module('pickle')", "importlib.import_module('pickle')"),
        ("__import__('marshal')", "__import__('marshal')"),
        ("import torch\ntorch.load('w.pth')", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('w.pth', weights_only=False)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('w.pth', weights_only=safe)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('w.pth', **options)", "torch.load without weights_only=True"),
        ("import torch as t\nt.load('w.pth')", "torch.load without weights_only=True"),
        ("from torch import load\nload('w.pth')", "torch.load without weights_only=True"),
        ("import torch\ntorch.serialization.load('w.pth')", "torch.serialization.load without weights_only=True"),
        ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "numpy.load with allow_pickle"),
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
    assert unsafe_uses("import json\n\nimport torch\nx = torch.load(p)\n") == [
        (4, "torch.load without weights_only=True")
    ]


# ----------------------------------------------------------------------------- what ruff checks instead


@pytest.mark.parametrize(
    "source, code",
    [
        ("import pickle", "TID251"),
        ("import cPickle as p", "TID251"),
        ("import dill", "TID251"),
        ("import shelve", "TID251"),
        ("from pickle import loads", "TID251"),
        ("from _pickle import Unpickler", "TID251"),
        ("import cloudpickle", "TID251"),
        ("import jsonpickle", "TID251"),
        ("import pickle\npickle.loads(b'')", "S301"),
        ("import marshal\nmarshal.loads(b'')", "S302"),
        ("import yaml\nyaml.load(text)", "S506"),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "S506"),
        ("import yaml\nyaml.unsafe_load(text)", "TID251"),
        ("from yaml import full_load\nfull_load(text)", "TID251"),
        ("import yaml\nyaml.load_all(text)", "TID251"),
        ("import joblib\njoblib.load('m.joblib')", "TID251"),
        ("import pandas as pd\npd.read_pickle('f.pkl')", "S301"),
        ("exec(code)", "S102"),
        ("eval(code)", "S307"),
    ],
)
def test_ruff_flags_the_other_unsafe_patterns(source, code):
    """The project's ruff configuration (pyproject.toml) catches what the AST check above leaves to it."""
    found = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--quiet",
            "--output-format",
            "concise",
            "--stdin-filename",
            "worker/snippet.py",
            "-",
        ],
        input=source + "\n",
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode in (0, 1), found.stderr  # 2: ruff or its configuration broken
    assert f" {code} " in found.stdout, found.stdout


def test_ruff_lets_safe_code_pass():
    found = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--quiet",
            "--select",
            "S,TID251",
            "--stdin-filename",
            "worker/snippet.py",
            "-",
        ],
        input="import yaml\nconfig = yaml.safe_load(text)\nsafe = yaml.load(text, Loader=yaml.SafeLoader)\n",
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stdout + found.stderr
