"""Binder: what repo2docker reads in binder/, checked as closely as possible without Docker.

repo2docker (Python build pack) picks the Python of binder/runtime.txt,
runs ``pip install -r binder/requirements.txt`` from the repository's root
into a fresh environment, then ``binder/postBuild``; Binder then opens
notebooks/post_release_analysis.ipynb, which reads binder/sample-history.

A real install of binder/requirements.txt into a fresh venv takes ~95 s here
(123 distributions from the local package index), too long for `make test`;
so the slow test below does the two cheaper things that together fail
whenever a Binder build or the notebook on it would:

* resolves binder/requirements.txt in a **fresh** venv (no system site
  packages, nothing installed: ``pip install --dry-run --report``, which
  builds the workbench's metadata from this checkout), and
* makes exactly the resolved distributions importable in that venv (links
  to this machine's installed copies of the same versions; the workbench is
  this checkout), runs binder/postBuild with it, and runs the notebook with
  papermill from it against the sample history, as Binder opens it (from
  notebooks/, no workspace). A requirement missing from binder/requirements.txt
  is then missing in the kernel too; optional imports behave as on Binder.

It does not prove the wheels install on Binder's image (Docker is not
available here); the resolution uses the same index and Python version.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

BINDER = REPO / "binder"
NOTEBOOK = REPO / "notebooks" / "post_release_analysis.ipynb"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_runtime_pins_a_python_the_workbench_supports() -> None:
    from packaging.specifiers import SpecifierSet

    runtime = (BINDER / "runtime.txt").read_text().strip()
    m = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert m, f"binder/runtime.txt must read python-X.Y, not {runtime!r}"
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(m.group(1) + ".0"), (runtime, requires)
    assert os.access(BINDER / "postBuild", os.X_OK), "repo2docker runs postBuild only when it is executable"


def test_sample_history_is_the_current_example_made_by_the_documented_script() -> None:
    """The sample's production stages are those of today's Shops example: regenerate it when they drift."""
    from workbench import features
    from workbench.config import load_workspace_config
    from workbench.metrics.io import Snapshot, config_stages

    features.load()  # the feature modules' config keys (routes, rollout, packages)

    cols = ["pipeline", "position", "stage", "approval_type", "traffic_route", "traffic_weight", "point",
            "rollout", "production"]
    shipped = Snapshot(BINDER / "sample-history").frame("config_stages")[cols]
    current = config_stages(load_workspace_config(REPO))[cols]
    key = ["pipeline", "position"]
    shipped = shipped.sort_values(key).reset_index(drop=True).astype(str)
    current = current.sort_values(key).reset_index(drop=True).astype(str)
    diff = shipped.merge(current, how="outer", indicator=True).query("_merge != 'both'")
    assert diff.empty, ("binder/sample-history was made from another version of the example; "
                        f"run binder/make_sample_history.py:\n{diff.to_string()}")
    script = BINDER / "make_sample_history.py"
    assert "make_sample_history.py" in (REPO / "docs" / "metrics.md").read_text()
    assert "shops.gocd.yaml" in script.read_text()  # it runs the example, it does not write numbers
    manifest = json.loads((BINDER / "sample-history" / "manifest.json").read_text())
    assert manifest["frames"]["pipeline_runs"]["rows"] > 20 and manifest["frames"]["commits"]["rows"] > 0


def _populate(venv: Path, report: dict) -> list[str]:
    """Make exactly the resolved distributions importable in ``venv``: links to this machine's installed copies.

    Returns the distributions whose installed version differs from the resolved one (none, as a rule: the
    project's venv is installed from the same index). The workbench itself is the checkout (PYTHONPATH).
    """
    site = next((venv / "lib").glob("python3.*/site-packages"))
    differ = []
    for item in report["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if _norm(name) == "release-workbench":
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} {version} (resolved from binder/requirements.txt) is not installed here: "
                        "`make venv` installs the same extras")
        if dist.version != version:
            differ.append(f"{name} {version} resolved, {dist.version} here")
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            link = site / top
            if not link.exists() and (base / top).exists():
                link.symlink_to(base / top)
    return differ


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_requirements_resolve_and_the_notebook_runs_on_the_sample_history(tmp_path: Path) -> None:
    """The notebook runs in a venv holding only what binder/requirements.txt resolves to."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_WORKSPACE", "VIRTUAL_ENV")}
    # 1. the resolution, in a fresh venv, from the repository's root as repo2docker runs it
    venv, report = tmp_path / "venv", tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # this pip, resolving for the fresh venv's interpreter and its empty site-packages (--python)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--dry-run", "--ignore-installed", "--report", str(report),
                        "-r", str(BINDER / "requirements.txt")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    resolved = json.loads(report.read_text())
    assert "release-workbench" in {_norm(i["metadata"]["name"]) for i in resolved["install"]}
    differ = _populate(venv, resolved)
    assert not differ, f"the resolution differs from this machine's installs, so the run below would not be faithful: {differ}"
    py = venv / "bin" / "python"
    env = {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", "PYTHONPATH": str(REPO)}
    # 2. postBuild, as repo2docker runs it: from the root, the image's python first on PATH
    post = subprocess.run(["bash", str(BINDER / "postBuild")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert post.returncode == 0, post.stdout + post.stderr
    assert "production deployments" in post.stdout
    # 3. the notebook as Binder opens it: from notebooks/, no workspace; a last cell says which python ran it
    nb = json.loads(NOTEBOOK.read_text())
    where = tmp_path / "kernel.txt"
    nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                        "source": f"import sys\nopen({str(where)!r}, 'w').write(sys.prefix)"})
    src, out = tmp_path / "analysis.ipynb", tmp_path / "analysis.out.ipynb"
    src.write_text(json.dumps(nb))
    run = subprocess.run([str(py), "-m", "papermill", str(src), str(out), "--cwd", str(REPO / "notebooks"),
                          "-k", "python3"], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert Path(where.read_text()) == venv, "the kernel did not run in the Binder-like venv"
    text = out.read_text()
    assert "sample history" in text or "sample-history" in text
    for title in ("Change lead time per commit", "Deployment frequency", "Change fail rate",
                  "Failed deployment recovery time", "Deployment rework rate", "Stage durations"):
        assert title in text, f"the notebook drew no {title!r} chart"
