"""Package repositories: publish, promote with checksums, never overwrite, atomic under SIGKILL."""
from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from workbench import packages as P
from workbench.errors import InvalidState, NotFound, UsageError

pytestmark = pytest.mark.timeout(120)

REPOS = """
format_version: 10
package_repositories:
  qa: {url: repos/qa}
  prod: {url: repos/prod}
pipelines:
  build:
    group: g
    stages:
      - package:
          jobs:
            tar:
              tasks:
                - script: mkdir -p dist && echo "api build ${GO_PIPELINE_COUNTER}" > dist/api.tgz
                - publish_package: {repository: qa, name: api, version: "1.0.${GO_PIPELINE_COUNTER}", file: dist/api.tgz}
  release:
    group: g
    stages:
      - promote:
          jobs:
            prod:
              tasks:
                - promote_package: {name: api, version: "1.0.1", from: qa, to: prod}
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def repos(tmp_path: Path) -> tuple[P.Repository, P.Repository, Path]:
    conf = {"qa": {"url": str(tmp_path / "qa")}, "prod": {"url": str(tmp_path / "prod")}}
    f = tmp_path / "api-1.0.0.tgz"
    f.write_bytes(b"the build" * 1000)
    return P.repository("qa", tmp_path, conf), P.repository("prod", tmp_path, conf), f


def test_publish_promote_and_list(repos: Any) -> None:
    qa, prod, f = repos
    pkg = P.publish(qa, "api", "1.0.0", f)
    assert (pkg.sha256, pkg.size, pkg.file) == (sha(f.read_bytes()), f.stat().st_size, "api-1.0.0.tgz")
    assert P.list_packages(prod) == []
    promoted = P.promote(qa, prod, "api", "1.0.0", expect_sha256=pkg.sha256)
    assert promoted.promoted_from == "qa" and promoted.sha256 == pkg.sha256
    assert (prod.path / "api" / "1.0.0" / "api-1.0.0.tgz").read_bytes() == f.read_bytes()
    assert [(p.repository, p.name, p.version) for p in P.list_packages(prod)] == [("prod", "api", "1.0.0")]
    # promoting the same bytes again is a no-op (retries are safe)
    assert P.promote(qa, prod, "api", "1.0.0").sha256 == pkg.sha256


def test_promotion_refuses_a_checksum_mismatch(repos: Any) -> None:
    qa, prod, f = repos
    P.publish(qa, "api", "1.0.0", f)
    (qa.path / "api" / "1.0.0" / f.name).write_bytes(b"tampered after publishing")
    with pytest.raises(InvalidState, match="checksum mismatch"):
        P.promote(qa, prod, "api", "1.0.0")
    assert P.get(prod, "api", "1.0.0") is None and not (prod.path / "api" / "1.0.0" / f.name).exists()


def test_promotion_refuses_an_unexpected_checksum(repos: Any) -> None:
    qa, prod, f = repos
    P.publish(qa, "api", "1.0.0", f)
    with pytest.raises(InvalidState, match="not the expected"):
        P.promote(qa, prod, "api", "1.0.0", expect_sha256="0" * 64)
    assert P.get(prod, "api", "1.0.0") is None


def test_a_version_never_changes(repos: Any, tmp_path: Path) -> None:
    qa, prod, f = repos
    P.publish(qa, "api", "1.0.0", f)
    other = tmp_path / "other.tgz"
    other.write_bytes(b"different bytes")
    with pytest.raises(InvalidState, match="already has api 1.0.0 with different content"):
        P.publish(qa, "api", "1.0.0", other)
    # prod already holds other bytes under 1.0.0: promotion must not overwrite them
    P.publish(prod, "api", "1.0.0", other)
    with pytest.raises(InvalidState, match="versions never change"):
        P.promote(qa, prod, "api", "1.0.0")
    assert (prod.path / "api" / "1.0.0" / "other.tgz").read_bytes() == b"different bytes"
    assert P.publish(qa, "api", "1.0.0", f).sha256 == sha(f.read_bytes())  # same bytes: fine


@pytest.mark.parametrize("bad", ["../evil", "a/b", "..", ".hidden", "", "x" * 300, "-rf"])
def test_names_and_versions_are_validated(repos: Any, bad: str) -> None:
    qa, prod, f = repos
    with pytest.raises(UsageError):
        P.publish(qa, bad, "1.0", f)
    with pytest.raises(UsageError):
        P.publish(qa, "api", bad, f)
    with pytest.raises(UsageError):
        P.promote(qa, prod, "api", bad)


def test_missing_version_is_not_found(repos: Any) -> None:
    qa, prod, f = repos
    with pytest.raises(NotFound, match="versions there: none"):
        P.promote(qa, prod, "api", "9.9")


@pytest.mark.parametrize("step", ["after-copy", "before-commit"])
def test_a_crash_between_copy_and_commit_leaves_the_old_state(workspace: Any, step: str) -> None:
    workspace.write("repos.gocd.yaml", REPOS)
    root = workspace.root
    (root / "api.tgz").write_bytes(b"release candidate" * 5000)
    r = workspace.cli("package", "publish", "api", "1.0.1", str(root / "api.tgz"), "--repo", "qa")
    assert r.code == 0, r.err
    crashed = workspace.cli("package", "promote", "api", "1.0.1", "--from", "qa", "--to", "prod",
                            env={P.CRASH_ENV: step})
    assert crashed.code == -signal.SIGKILL  # killed between the copy and the commit
    folder = root / "repos" / "prod" / "api" / "1.0.1"
    assert folder.is_dir() and not (folder / P.MANIFEST).exists()  # the copy was under way...
    listed = workspace.cli("package", "list", "--repo", "prod", "--format", "json")
    assert listed.code == 0 and json.loads(listed.out) == []  # ...but prod is in its old state
    done = workspace.cli("package", "promote", "api", "1.0.1", "--from", "qa", "--to", "prod")
    assert done.code == 0, done.err
    listed = json.loads(workspace.cli("package", "list", "--repo", "prod", "--format", "json").out)
    assert [(p["name"], p["version"], p["sha256"]) for p in listed] == [("api", "1.0.1", sha((root / "api.tgz").read_bytes()))]
    assert (folder / "api.tgz").read_bytes() == (root / "api.tgz").read_bytes()


def test_yaml_tasks_publish_then_promote(workspace: Any) -> None:
    workspace.write("repos.gocd.yaml", REPOS)
    r = workspace.cli("run", "build", "-q")
    assert r.code == 0, r.out + r.err
    qa = json.loads(workspace.cli("package", "list", "--repo", "qa", "--format", "json").out)
    assert [(p["name"], p["version"]) for p in qa] == [("api", "1.0.1")]
    assert (workspace.root / "repos" / "qa" / "api" / "1.0.1" / "api.tgz").read_text() == "api build 1\n"
    r = workspace.cli("run", "release", "-q")
    assert r.code == 0, r.out + r.err
    prod = json.loads(workspace.cli("package", "list", "--repo", "prod", "--format", "json").out)
    assert [(p["version"], p["promoted_from"]) for p in prod] == [("1.0.1", "qa")]
    events = workspace.open().frames.packages
    assert list(events["action"]) == ["publish", "promote"] and list(events["repository"]) == ["qa", "prod"]
    assert events["job_run_id"].notna().all()


def test_cli_refuses_bad_input_with_exit_2(workspace: Any) -> None:
    workspace.write("repos.gocd.yaml", REPOS)
    (workspace.root / "f.tgz").write_bytes(b"x")
    r = workspace.cli("package", "publish", "../etc", "1.0", str(workspace.root / "f.tgz"), "--repo", "qa")
    assert r.code == 2 and "invalid package name" in r.err and "Traceback" not in r.err
    r = workspace.cli("package", "promote", "api", "7.0", "--from", "qa", "--to", "prod")
    assert r.code == 2 and "qa has no api 7.0" in r.err
