"""The docs stay true to the repository: generated pages current, named paths present, commands valid.

Scanned: README.md and every page under docs/. A command line in a shell code block is checked with the
real parser (the console scripts' argparse parsers, the Makefile's targets, the files `python`/`bash`
run); a repository path in inline code must exist.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHELL_FENCES = {"bash", "sh", "shell", "console"}
SCRIPT_MODULES = {}  # console script name -> module, filled from pyproject.toml
REPO_TOP = ("worker/", "common/", "producer/", "infra/", "scripts/", "docker/", "tests/", "docs/", ".ci/")
ROOT_FILES = {"Makefile", "pyproject.toml", "constraints.txt", "mkdocs.yml", "LICENSE", "CHANGELOG.md", "SECURITY.md"}
CREATED_BY_THE_USER = {"docker/.env"}  # named as something to create, ignored by git


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_reference_docs", ROOT / "scripts" / "gen_reference_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()


def doc_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def tracked_paths() -> set[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = {line for line in listed.splitlines() if line}
    folders = set()
    for file in files:
        parts = Path(file).parts
        folders |= {"/".join(parts[:i]) + "/" for i in range(1, len(parts))}
    return files | folders


# ---------------------------------------------------------------- generated pages


def test_generated_reference_pages_are_current():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in GENERATOR.pages().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"stale generated page(s) {stale}: run `make reference-docs` and commit them"


def test_the_cli_page_names_every_console_script_and_subcommand():
    cli = (ROOT / "docs" / "reference" / "cli.md").read_text()
    for name, parser in GENERATOR.script_parsers().items():
        assert f"## `{name}`" in cli
        for subcommand, _, _ in GENERATOR._subparsers(parser):
            assert f"`{name} {subcommand}`" in cli


# ---------------------------------------------------------------- repository paths


def named_paths(text: str) -> list[str]:
    """Repository paths in inline code spans and link targets, cut before any placeholder, glob or `::test`."""
    found = []
    for span in re.findall(r"`([^`\n]+)`", text) + re.findall(r"\]\(([^)\s]+)\)", text):
        for token in span.split():
            token = token.strip("\"'(),;:")
            if token in ROOT_FILES:
                found.append(token)
            elif token.startswith(REPO_TOP) and "://" not in token:
                found.append(re.split(r"[<*{…$\[]|\.\.\.|::", token)[0].split("#")[0])
    return found


def test_every_repository_path_named_in_the_docs_exists():
    present = tracked_paths()
    missing = []
    for path in doc_files():
        for name in named_paths(path.read_text()):
            if name in CREATED_BY_THE_USER or name in present or name.rstrip("/") in present:
                continue
            if any(known.startswith(name) for known in present):  # a prefix cut at a placeholder
                continue
            missing.append(f"{path.relative_to(ROOT)}: {name}")
    assert not missing, "paths named in the docs that are not in the repository:\n" + "\n".join(sorted(set(missing)))


def test_named_paths_are_found_and_placeholders_cut():
    text = "see `worker/stream/offsets.py`, `docs/images/dashboard-*.png`, `<root>/good/*`, `docker/.env`"
    assert named_paths(text) == ["worker/stream/offsets.py", "docs/images/dashboard-", "docker/.env"]


# ---------------------------------------------------------------- command lines


def shell_blocks(text: str) -> list[str]:
    blocks = []
    for fence, body in re.findall(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        if fence in SHELL_FENCES:
            blocks.append(body)
        elif fence == "text":  # a transcript: only the lines typed at a prompt
            blocks.append("\n".join(line[2:] for line in body.splitlines() if line.startswith("$ ")))
    return blocks


def command_lines(block: str) -> list[list[str]]:
    """Each simple command of a shell block as words: continuations joined, comments, env and pipes dropped."""
    joined = re.sub(r"\\\n", " ", block)
    commands = []
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an unbalanced quote in prose-like lines: not a command
            continue
        current: list[str] = []
        for word in [*words, ";"]:
            if word in {";", "&&", "||", "|", "&"} or word.endswith(";"):
                if word.endswith(";") and word != ";":
                    current.append(word[:-1])
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    cleaned = []
    for words in commands:
        while words and (re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] in {"do", "then", "time"}):
            words = words[1:]
        if words:
            cleaned.append(words)
    return cleaned


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", makefile, re.MULTILINE))


def script_parser(program: str):
    if not SCRIPT_MODULES:
        SCRIPT_MODULES.update(GENERATOR.console_scripts())
    module_name = SCRIPT_MODULES.get(Path(program).name)
    return importlib.import_module(module_name).build_parser() if module_name else None


def module_parser(module_name: str):
    module = importlib.import_module(module_name)
    return module.build_parser() if hasattr(module, "build_parser") else None


def without_placeholders(args: list[str]) -> list[str]:
    """Docs mark optional parts as [--flag VALUE] and elisions as ...: drop both, as a reader would."""
    kept, optional = [], False
    for arg in args:
        if arg.startswith("[") and not optional:
            optional = True
        if not optional and arg not in {"...", "…"}:
            kept.append(arg)
        if optional and arg.endswith("]"):
            optional = False
    return kept


def check_command(words: list[str], targets: set[str]) -> str | None:
    """None when the command is valid, else why not."""
    program, args = words[0], words[1:]
    if program == "make":
        unknown = [arg for arg in args if "=" not in arg and not arg.startswith("-") and arg not in targets]
        return f"no make target {unknown}" if unknown else None
    if program in {"bash", "sh"} and args and args[0].endswith(".sh"):
        return None if (ROOT / args[0]).exists() else f"no script {args[0]}"
    parser = script_parser(program)
    if parser is None and Path(program).name.startswith("python"):
        if args[:1] == ["-m"] and len(args) > 1 and args[1].split(".")[0] in {"worker", "common", "producer", "infra"}:
            try:
                parser = module_parser(args[1])
            except ImportError as exc:
                return f"cannot import {args[1]}: {exc}"
            args = args[2:]
        elif args and args[0].endswith(".py"):
            return None if (ROOT / args[0]).exists() else f"no script {args[0]}"
    if parser is None:
        return None  # docker, cd, cp, pytest...: not ours to parse
    try:
        parser.parse_args(without_placeholders(args))
    except SystemExit as exc:
        return f"argparse refused it (exit {exc.code})"
    return None


def test_every_command_line_in_the_docs_parses(capsys):
    targets = make_targets()
    problems = []
    for path in doc_files():
        for block in shell_blocks(path.read_text()):
            for words in command_lines(block):
                why = check_command(words, targets)
                if why:
                    problems.append(f"{path.relative_to(ROOT)}: {shlex.join(words)}\n    {why}")
    capsys.readouterr()
    assert not problems, "command lines in the docs that do not parse:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "valid"),
    [
        ("make demo", True),
        ("make no-such-target", False),
        ("linewatch-worker inspect a.png --object 'metal nut' --profile tiny", True),
        ("linewatch-worker inspect a.png --object 'metal nut' --profile huge", False),
        ("linewatch-worker inspect a.png", False),  # --object is required
        ("LINEWATCH_X=1 .venv/bin/linewatch-worker bench --profile base [--frames N]", True),
        ("linewatch-worker no-such-command", False),
        ("python scripts/no_such_script.py", False),
    ],
)
def test_the_command_check_tells_valid_from_invalid(line, valid, capsys):
    targets = make_targets()
    results = [check_command(words, targets) for words in command_lines(line)]
    capsys.readouterr()
    assert all(result is None for result in results) is valid


def test_the_readme_stays_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "README.md is the front door: move the detail into a docs page"
    assert "arXiv 2306.09269" in readme  # the method's paper, cited
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", readme))
    sections = {
        "start",
        "guides",
        "deploy",
        "reference",
        "explanation",
        "evaluation.md",
        "benchmarks.md",
        "contributing.md",
    }
    reached = {Path(link).parts[1] for link in linked}
    assert sections <= reached, f"docs sections the README does not link to: {sorted(sections - reached)}"
