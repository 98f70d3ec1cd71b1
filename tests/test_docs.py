"""The examples of docs/config.md are real: each ```yaml block marked
``# example: loads`` loads, each marked ``# example: refused`` is refused, and
``# example: settings`` blocks are valid ``workbench.yaml`` files.

A block may add expectation lines right after its marker:
``# error: TEXT`` (refused: some problem contains TEXT) and
``# warning: TEXT`` (loads: some warning contains TEXT). Unmarked blocks are
fragments and are not checked.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import workbench.features
from workbench.config import Config, load_texts
from workbench.errors import ConfigError
from workbench.settings import load_settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
_BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_MARK = re.compile(r"#\s*example:\s*(\S+)")
_EXPECT = re.compile(r"#\s*(error|warning):\s*(.+?)\s*$")
KINDS = ("loads", "refused", "settings")


def _blocks() -> list[tuple[str, int, str, str]]:
    """(kind, line, id, text) of every marked yaml block of the document."""
    text = DOC.read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        body = m.group(1)
        first = body.lstrip("\n").split("\n", 1)[0]
        mark = _MARK.fullmatch(first.strip())
        if mark is None:
            continue
        line = text.count("\n", 0, m.start()) + 1
        out.append((mark.group(1), line, f"{mark.group(1)}@line{line}", body))
    return out


BLOCKS = _blocks()


def _expectations(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"error": [], "warning": []}
    for line in text.splitlines():
        m = _EXPECT.fullmatch(line.strip())
        if m:
            found[m.group(1)].append(m.group(2))
    return found


def _load(text: str) -> Config:
    workbench.features.load()  # feature sections (routes:, package_repositories:, rollout:, ...)
    return load_texts({"doc.yaml": text})


def test_the_document_has_examples_of_each_kind() -> None:
    kinds = [kind for kind, *_ in BLOCKS]
    assert set(kinds) <= set(KINDS), f"unknown example marker in {DOC.name}: {sorted(set(kinds) - set(KINDS))}"
    assert kinds.count("loads") >= 5 and kinds.count("refused") >= 2 and "settings" in kinds


@pytest.mark.parametrize("text", [b[3] for b in BLOCKS if b[0] == "loads"],
                         ids=[b[2] for b in BLOCKS if b[0] == "loads"])
def test_loads(text: str) -> None:
    try:
        config = _load(text)
    except ConfigError as exc:
        pytest.fail(f"the example is refused:\n{exc}")
    assert config.pipelines, "a loading example should define at least one pipeline"
    warnings = [str(w) for w in config.warnings]
    for expected in _expectations(text)["warning"]:
        assert any(expected in w for w in warnings), f"no warning contains {expected!r}: {warnings}"


@pytest.mark.parametrize("text", [b[3] for b in BLOCKS if b[0] == "refused"],
                         ids=[b[2] for b in BLOCKS if b[0] == "refused"])
def test_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(text)
    problems = [str(p) for p in info.value.problems]
    assert problems and all(re.match(r"^doc\.yaml:\d+:\d+: ", p) for p in problems), problems
    for expected in _expectations(text)["error"]:
        assert any(expected in p for p in problems), f"no problem contains {expected!r}: {problems}"


@pytest.mark.parametrize("text", [b[3] for b in BLOCKS if b[0] == "settings"],
                         ids=[b[2] for b in BLOCKS if b[0] == "settings"])
def test_settings(text: str, tmp_path: Path) -> None:
    (tmp_path / "workbench.yaml").write_text(text)
    settings = load_settings(tmp_path)
    assert settings.path is not None
    assert settings.executor or settings.store_url or settings.artifacts_url or settings.config_repos
