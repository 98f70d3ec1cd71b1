"""Git and dependency materials with real repositories: mirrors, filters, checkouts, commits, errors."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from materials_fixtures import git_material, job_log, pipeline, runs, write

from workbench.errors import MaterialError, UsageError
from workbench.materials import filters
from workbench.materials.git import Mirror
from workbench.status import Status
from workbench.triggering import tick

pytestmark = pytest.mark.timeout(120)


def test_filters_follow_gocd_semantics() -> None:
    assert filters.triggers(["a.py"])  # no filter: anything triggers
    assert not filters.triggers(["docs/x.md", "README.md"], ignore=["docs/**", "*.md"])
    assert filters.triggers(["docs/x.md", "src/a.py"], ignore=["docs/**"])  # one file that counts is enough
    assert not filters.triggers(["sub/README.md"], ignore=["**/*.md"])
    assert filters.triggers(["sub/README.md"], ignore=["*.md"])  # Ant: *.md is the top level only
    assert filters.triggers(["src/app/main.py"], includes=["src/**"])
    assert not filters.triggers(["tests/t.py"], includes=["src/**"])
    assert not filters.triggers(["src/notes.md"], includes=["src/**"], ignore=["**/*.md"])


def test_mirror_polls_fetches_and_reports_bad_branches(tmp_path: Path, git_repo: Any) -> None:
    repo = git_repo("app")
    mirror = Mirror(tmp_path / "mirrors", repo.url)
    assert mirror.poll(["master"]) == {"master": repo.head}
    assert mirror.local_head("master") == repo.head
    new = repo.commit({"b.txt": "b"}, "second")
    assert mirror.poll(["master"])["master"] == new and mirror.local_head("master") == new
    bad = mirror.poll(["nope"])["nope"]
    assert isinstance(bad, MaterialError) and "branch 'nope' does not exist" in str(bad)
    with pytest.raises(MaterialError, match="cannot reach"):
        Mirror(tmp_path / "mirrors", str(tmp_path / "missing")).poll(["master"])


def test_first_parent_history_is_read_once_per_head_across_threads_and_processes(tmp_path: Path, git_repo: Any) -> None:
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from workbench.materials import git as G

    repo = git_repo("app")
    shas = [repo.head] + [repo.commit({"f.txt": str(i)}, f"c{i}") for i in range(3)]
    mirror = Mirror(tmp_path / "mirrors", repo.url)
    mirror.poll(["master"])
    with ThreadPoolExecutor(8) as pool:  # the deciding threads of a pass ask at once
        got = list(pool.map(lambda _: mirror.first_parent_history(shas[-1], 20), range(16)))
    assert all(h == shas[::-1] for h in got) and not G._HISTORY_GATES
    assert mirror.first_parent_history(shas[1], 20) == shas[1::-1]  # another head, its own history
    G._HISTORY.clear()  # a new process: the history is read back from beside the mirror, without git
    shutil.rmtree(mirror.path)
    assert Mirror(tmp_path / "mirrors", repo.url).first_parent_history(shas[-1], 20) == shas[::-1]
    assert not mirror.path.exists()  # no git ran: it would have made the mirror again


def test_commits_recorded_with_authors_times_and_messages(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}))
    tick(ws)
    first = runs(ws, "app")[0]
    c1 = repo.commit({"a.py": "1"}, "add a\n\nwith a body", date="2024-03-01T10:00:00+00:00")
    c2 = repo.commit({"b.py": "2"}, "add b", date="2024-03-02T11:30:00+00:00")
    tick(ws)
    second = runs(ws, "app")[1]
    commits = ws.frames.commits
    assert list(commits[commits.run_id == first.id].sha) == [first.revisions["code"]["revision"]]  # first run: its head
    mine = commits[commits.run_id == second.id].set_index("sha")
    assert list(mine.index) == [c2, c1]  # newest first, both brought by the second run (batched)
    assert mine.loc[c1, "author"] == "Dev" and mine.loc[c1, "author_email"] == "dev@example.com"
    assert mine.loc[c1, "message"] == "add a\n\nwith a body"
    assert str(mine.loc[c2, "commit_time"]) == "2024-03-02 11:30:00+00:00"
    assert str(mine.loc[c1, "author_time"].tz) == "UTC"
    revs = ws.frames.material_revisions.set_index("counter")
    assert revs.loc[2, "revision"] == c2 and revs.loc[2, "previous_revision"] == first.revisions["code"]["revision"]


def test_job_checks_out_the_exact_revision_into_its_destination(workspace: Any, git_repo: Any) -> None:
    app, lib = git_repo("app"), git_repo("lib")
    lib.commit({"lib.txt": "v1"}, "lib v1")
    script = ("cat app/README.md lib/lib.txt; echo; git -C app rev-parse HEAD; git -C app remote get-url origin; "
              "git -C lib rev-list --count HEAD; echo FROM=$GO_FROM_REVISION_APP TO=$GO_TO_REVISION_APP")
    ws = write(workspace, pipeline("p", {
        "app": git_material(app.url, destination="app"),
        "lib": git_material(lib.url, destination="lib", shallow_clone=True),
    }, script))
    run = ws.engine().run("p")  # a manual trigger also resolves and records the materials
    assert run.status == Status.PASSED, run.reason
    log = job_log(ws, run)
    assert "# app" in log and "v1" in log
    assert f"\n{app.head}\n" in log and f"\n{app.url}\n" in log  # origin is the real URL, not the mirror
    assert "\n1\n" in log  # shallow: one commit of history
    assert f"TO={app.head}" in log
    mirrors = list((ws.state / "mirrors").iterdir())
    assert len([m for m in mirrors if m.name.endswith(".git")]) == 2  # one bare mirror per URL


def test_rerun_checks_out_the_original_revision_after_the_branch_moved(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, "cat version.txt"))
    old = repo.commit({"version.txt": "one"}, "one")
    run = ws.engine().run("app")
    repo.commit({"version.txt": "two"}, "two")
    tick(ws)  # builds "two" as app/2
    with ws.engine() as engine:
        again = engine.drive(engine.rerun(run, "build"))
    assert again.status == Status.PASSED
    detail = ws.store.run_detail(run.id)
    assert [s.counter for s in detail.stages] == [1, 2]
    assert "one" in job_log(ws, again) and again.revisions["code"]["revision"] == old


def test_manual_trigger_with_chosen_revision(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("app")
    old = repo.commit({"v.txt": "old"}, "old")
    repo.git("tag", "v1")
    repo.commit({"v.txt": "new"}, "new")
    ws = write(workspace, pipeline("app", {"code": git_material(repo.url)}, "cat v.txt"))
    run = ws.engine().run("app", revisions={"code": "v1"})
    assert run.revisions["code"]["revision"] == old and "old" in job_log(ws, run)
    with pytest.raises(UsageError, match="has no material nope"):
        ws.engine().trigger("app", revisions={"nope": "x"})
    with pytest.raises(MaterialError, match="not in"):
        ws.engine().trigger("app", revisions={"code": "no-such-tag"})


@pytest.mark.usefixtures("workspace_store")  # SQLite and PostgreSQL (conftest)
def test_unreachable_remote_is_a_material_error_and_others_carry_on(
        workspace: Any, git_repo: Any, tmp_path: Path) -> None:
    good = git_repo("good")
    gone = tmp_path / "gone"
    ws = write(workspace,
               pipeline("good", {"code": git_material(good.url)}),
               pipeline("broken", {"code": git_material(str(gone))}),
               pipeline("badbranch", {"code": git_material(good.url, branch="nope")}))
    report = tick(ws)
    assert [r.split()[0] for r in report.triggered] == ["good/1"]
    assert {e.split(":")[0] for e in report.material_errors} == {"broken/code", "badbranch/code"}
    from workbench.reporting import status_rows

    rows = {r["pipeline"]: r for r in status_rows(ws)}
    assert rows["good"]["status"] == "passed" and rows["good"]["material_errors"] == []
    assert "cannot reach" in rows["broken"]["material_errors"][0]["message"]
    assert "branch 'nope' does not exist" in rows["badbranch"]["material_errors"][0]["message"]
    # the remote comes back: the error is resolved and the pipeline triggers
    import shutil

    shutil.copytree(good.path, gone)
    tick(ws)
    rows = {r["pipeline"]: r for r in status_rows(ws)}
    assert rows["broken"]["material_errors"] == [] and rows["broken"]["status"] == "passed"
    errors = ws.frames.material_errors.set_index("pipeline")
    assert not errors.loc["broken", "open"] and errors.loc["badbranch", "open"]


@pytest.mark.usefixtures("workspace_store")  # SQLite and PostgreSQL (conftest)
def test_dependency_material_env_and_provenance(workspace: Any, git_repo: Any) -> None:
    repo = git_repo("up")
    script = ('echo "LABEL=$GO_DEPENDENCY_LABEL_UPSTREAM LOC=$GO_DEPENDENCY_LOCATOR_UPSTREAM '
              'CH=$GO_MATERIAL_UPSTREAM_HAS_CHANGED"')
    ws = write(workspace,
               pipeline("upstream", {"code": git_material(repo.url)}, label_template="1.0.${COUNT}",
                        stages=[{"build": {"jobs": {"job": {"tasks": [{"script": "true"}]}}}},
                                {"slow": {"jobs": {"job": {"tasks": [{"script": "true"}]}}}}]),
               pipeline("downstream", {"upstream": {"pipeline": "upstream", "stage": "build"}}, script,
                        label_template="${upstream}-${COUNT}"))
    tick(ws)
    down = runs(ws, "downstream")
    assert len(down) == 1 and down[0].status == Status.PASSED
    assert down[0].trigger == "dependency" and down[0].label == "1.0.1-1"
    assert "LABEL=1.0.1 LOC=upstream/1/build/1 CH=true" in job_log(ws, down[0])
    prov = ws.frames.provenance
    cols = ["upstream_pipeline", "upstream_counter", "downstream_pipeline", "downstream_counter"]
    assert prov[cols].values.tolist() == [["upstream", 1, "downstream", 1]]
    tick(ws)
    assert len(runs(ws, "downstream")) == 1  # nothing new upstream: no new run
