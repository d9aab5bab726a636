"""User-facing text speaks of the product, not of how it was built.

Scanned: README and every page under docs/, and the comments and string literals (docstrings, CLI help,
log and error messages) of the code a user runs or reads. Flagged: work-session talk ("this session",
"session 12"), issue numbers, "the seed" for the paper, the names of the machines it was measured on,
and benchmark run ids. Legitimate uses of the words (a consumer's session timeout, an HTTP session, a
random seed) do not match.
"""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("worker", "common", "producer", "infra", "scripts", "docker", "tests")
TEXT_SUFFIXES = {".md", ".sh", ".yaml", ".yml", ".toml", ".js", ".html", ".css", ".txt", ".example"}
SELF = Path(__file__).resolve()

_NOT_A_WORK_SESSION = r"(?!\s*(?:cookie|secret|timeout|token|middleware|state|max|expir|id\b|key))"
HISTORY = [
    (
        "work session",
        rf"\b(?:this|that|a later|later|an earlier|earlier|previous|next|other|our|these|those|one|each)\s+sessions?\b{_NOT_A_WORK_SESSION}",
    ),
    ("work session", r"\b(?:project|developer|engineer)s?'s?\s+sessions?\b"),
    ("work session", r"\bsessions?\s+\d+"),
    ("work step", r"\bstop\s+\d+\b"),
    ("issue number", r"\bissues?\s+#?\d+"),
    ("the paper as 'seed'", r"\bthe seed\b(?!\s+(?:value|number|of the|for the|=|argument|option))"),
    ("the paper as 'seed'", r"(?<!each )(?<!every )(?<!one )(?<!random )\bseed's\b"),
    ("the paper as 'seed'", r"\bseed[ -](?:paper|report|table|way|rule|method|pipeline|protocol|states|numbers)\b"),
    ("the paper as 'seed'", r"\(seed,"),
    ("machine name", r"\b(?:EPYC|Xeon)\s+VM\b"),
    ("machine name", r"\b(?:build|development|dev)\s+(?:machine|VM|box)\b"),
    ("machine name", r"\bthis\s+(?:[\w-]+\s+)?(?:machine|VM)\b"),
    ("run id", r"\b[sr]\d{1,2}[a-z]?_[a-z0-9]+(?:_[a-z0-9]+)*(?:\.json)?\b"),
    ("diary", r"\bRUNS\.md\b"),
]
PATTERNS = [(label, re.compile(pattern, re.IGNORECASE)) for label, pattern in HISTORY]


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in listed.splitlines() if line]


def user_facing_files() -> list[Path]:
    files = []
    for path in tracked_files():
        relative = path.relative_to(ROOT)
        top = relative.parts[0]
        if path.resolve() == SELF or not path.is_file():
            continue
        if relative.name in {"README.md", "CHANGELOG.md", "SECURITY.md", "Makefile", "mkdocs.yml"}:
            files.append(path)
        elif top == "docs" and path.suffix == ".md":
            files.append(path)
        elif top in CODE_DIRS and (path.suffix == ".py" or path.suffix in TEXT_SUFFIXES or "Dockerfile" in path.name):
            files.append(path)
    return files


def prose_of(path: Path) -> list[tuple[int, str]]:
    """(line, text) pairs: a Python file's comments and string literals, any other file's every line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".py":
        return list(enumerate(text.splitlines(), start=1))
    pieces = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING) or token.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            pieces.append((token.start[0], token.string))
    return pieces


def history_talk(lines: list[tuple[int, str]]) -> list[str]:
    found = []
    for number, text in lines:
        for label, pattern in PATTERNS:
            for match in pattern.finditer(text):
                found.append(f"{number}: {label}: {match.group(0)!r}")
    return found


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("measured in this session on the shared CPU", True),
        ("see issue 15 for the figures", True),
        ("the seed's connected components", True),
        ("on the AMD EPYC VM it ran at 4.5x", True),
        ("the JSON of run s17_isnet_defaults_int8.json", True),
        ("a later session measured it", True),
        ("measured on this 2-core build machine", True),
        ("the producer's state machine", False),
        ("kafka.session_timeout_ms: one session timeout without a heartbeat", False),
        ("the onnxruntime session runs the graph; an HTTP session cookie", False),
        ("--seed makes it reproducible; the seed of the random generator", False),
        ("the mean over the seeds (each seed's table is kept too)", False),
        ("Baugh et al., VAND 2023 (arXiv 2306.09269)", False),
    ],
)
def test_the_patterns_tell_history_from_product_words(text, flagged):
    assert bool(history_talk([(1, text)])) is flagged


def test_no_internal_history_in_user_facing_text():
    problems = []
    for path in user_facing_files():
        problems += [f"{path.relative_to(ROOT)}:{found}" for found in history_talk(prose_of(path))]
    assert not problems, "internal history in user-facing text:\n" + "\n".join(problems)
