"""nbformat's validator generated once per machine (workbench/notebooks/schema.py), in fresh processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys
import fastjsonschema
if sys.argv[1] == "cached-only":  # the generated code must come from the cache folder
    fastjsonschema.compile_to_code = fastjsonschema.compile = None  # nbformat's own way would fail too
from workbench.notebooks import runner
import nbformat
good = {"cells": [{"cell_type": "code", "id": "a1", "metadata": {}, "source": "x=1", "outputs": [],
                   "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
nb = nbformat.reads(json.dumps(good), as_version=4)
bad = json.loads(json.dumps(good)); bad["cells"][0]["cell_type"] = "nope"
try:
    nbformat.validate(bad)
    print("invalid notebook accepted")
except nbformat.ValidationError:
    print("ok", len(nb.cells))
"""


def run(tmp_path: Path, mode: str, **env: str) -> str:
    r = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), **env})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_validator_is_generated_once_then_read_from_the_cache(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "release-workbench" / "nbschema"
    assert run(tmp_path, "generate") == "ok 1"
    files = list(folder.glob("nbschema-*.marshal"))
    assert len(files) == 1 and files[0].stat().st_size > 10_000
    assert run(tmp_path, "cached-only") == "ok 1"  # validates good and bad alike without generating anything
    files[0].write_bytes(b"\x00garbage")  # a damaged cache file is generated again
    assert run(tmp_path, "generate") == "ok 1"
    assert run(tmp_path, "cached-only") == "ok 1"


def test_without_the_cache_nbformat_generates_its_own(tmp_path: Path) -> None:
    assert run(tmp_path, "generate", WORKBENCH_SCHEMA_CACHE="0") == "ok 1"
    assert not (tmp_path / "cache" / "release-workbench").exists()
    # and an unwritable cache folder is no error either: nbformat's own way again
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "release-workbench").write_text("a file where the folder should be")
    assert run(tmp_path, "generate") == "ok 1"
