"""Security of decisions and of secrets.

* Every path that approves, rejects, moves traffic or rolls back — the CLI
  (identity from ``$JUPYTERHUB_USER``), the Python API (``user=``) and the
  dashboard's actions — refuses an identity that is not allowed, changes
  nothing (stage still waiting, weights unchanged in the store *and* at the
  provider) and leaves an audit row; the allowed person then succeeds, so
  the refusals are not an accident of the set-up.
* A secure variable's plain value appears nowhere the workbench writes:
  logs, executed notebooks, the raw SQLite file, every frame, CLI output,
  exported snapshots, the HTML report.
* The key file must be private (0600): 0644 or 0640 is refused.
"""
from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from reliability_fixtures import command_route, invariant_violations, served
from workbench.errors import SecretError, Unauthorized

pytestmark = pytest.mark.timeout(300)


def release_yaml(route: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    doc = {
        "format_version": 10,
        "roles": {"release-managers": ["alice", "bob"], "qa": ["carol"]},
        "routes": {"shop": route},
        "pipelines": {
            "release": {
                "stages": [
                    {"build": {"jobs": {"make": {"tasks": [{"exec": {"command": "true"}}]}}}},
                    {"install_25": {"approval": {"type": "manual", "roles": ["release-managers"]},
                                    "traffic": {"route": "shop", "weight": 25},
                                    "jobs": {"go": {"tasks": [{"exec": {"command": "true"}}]}}}},
                    {"install_100": {"approval": {"type": "manual", "roles": ["release-managers"]},
                                     "traffic": {"route": "shop", "weight": 100},
                                     "jobs": {"go": {"tasks": [{"exec": {"command": "true"}}]}}}},
                ],
            },
            "hotfix": {
                "stages": [
                    {"build": {"jobs": {"make": {"tasks": [{"exec": {"command": "true"}}]}}}},
                    {"ship": {"approval": {"type": "manual", "users": ["alice"]},
                              "jobs": {"go": {"tasks": [{"exec": {"command": "true"}}]}}}},
                ],
            },
            **(extra or {}),
        },
    }
    return yaml.safe_dump(doc, sort_keys=False)


def stage_of(ws: Any, pipeline: str, stage: str) -> str:
    run = ws.store.get_pipeline_run(pipeline, 1)
    return str(ws.store.run_detail(run).latest_stages()[stage].status)


def recorded(ws: Any) -> dict[str, int] | None:
    """The weights the store holds for route shop; None before the workbench ever moved it."""
    from workbench.traffic import route_status

    status = {r["route"]: r for r in route_status(ws)}["shop"]
    return status["weights"] if status["recorded"] else None


def cli(workspace: Any, args: tuple[str, ...], user: str) -> tuple[int, str]:
    """``workbench ARGS`` as ``$JUPYTERHUB_USER``, in this process; (exit status, stderr)."""
    from click.testing import CliRunner

    from workbench.cli import main

    result = CliRunner().invoke(main, ["-w", str(workspace.root), *args], env={"JUPYTERHUB_USER": user})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr


def test_every_decision_path_refuses_a_stranger_and_changes_nothing(workspace: Any, tmp_path: Path) -> None:
    from workbench import approvals, traffic
    from workbench.dashboard import actions

    route, state = command_route(tmp_path / "lb")
    workspace.write("release.yaml", release_yaml(route))
    ws = workspace.open()
    assert str(ws.run("release").status) == "waiting" and str(ws.run("hotfix").status) == "waiting"

    strangers = ["mallory", "carol", "Alice", "alice-admin"]  # carol is QA: a member of another role
    cli_attempts = [
        ("approve", "release/1/install_25"), ("approve", "--detach", "release/1/install_25"),
        ("reject", "release/1/install_25", "-m", "no"), ("reject", "hotfix/1/ship", "-m", "no"),
        ("approve", "hotfix/1/ship"), ("traffic", "shop", "--set", "50", "-m", "hand"),
        ("rollback", "release/1", "-m", "undo"),
    ]
    refused = 0
    for args in cli_attempts[:2]:  # a real `workbench` process, identity from the environment
        out = workspace.cli(*args, env={"JUPYTERHUB_USER": "mallory"})
        assert out.code == 3, (args, out)
        assert "mallory may not" in out.err and "recorded" in out.err and "Traceback" not in out.err, out.err
        refused += 1
    for who in strangers[:2]:  # every command, in this process (the same click commands, faster)
        for args in cli_attempts:
            code, err = cli(workspace, args, who)
            assert code == 3 and f"{who} may not" in err, (who, args, code, err)
            refused += 1
    # no identity from the hub: the OS user (root here) is not a release manager either
    assert cli(workspace, ("approve", "release/1/install_25"), "")[0] == 3
    refused += 1
    api_attempts = [
        lambda u: approvals.approve(ws, "release/1/install_25", user=u, drive=False),
        lambda u: approvals.reject(ws, "release/1/install_25", user=u, comment="no"),
        lambda u: approvals.reject(ws, "hotfix/1/ship", user=u, comment="no"),
        lambda u: traffic.set_weights(ws, "shop", 50, user=u, reason="hand"),
        lambda u: traffic.rollback(ws, "release/1", user=u, reason="undo"),
        lambda u: actions.approve(ws, "release/1/install_25", user=u, comment=None, drive=False),
        lambda u: actions.reject(ws, "hotfix/1/ship", user=u, comment="no"),
        lambda u: actions.set_weights(ws, "shop", 50, user=u, reason="hand"),
        lambda u: actions.rollback(ws, "release/1", user=u, reason="undo"),
    ]
    for who in strangers:
        for attempt in api_attempts:
            with pytest.raises(Unauthorized, match=f"{who} may not"):
                attempt(who)
            refused += 1
    # nothing changed, and every attempt is in the audit
    assert stage_of(ws, "release", "install_25") == "waiting" and stage_of(ws, "hotfix", "ship") == "waiting"
    assert served(state) == {"blue": 100, "green": 0} and recorded(ws) is None
    audit = ws.frames.audit
    assert (audit["outcome"] == "unauthorized").sum() == refused and (audit["outcome"] == "ok").sum() == 0
    assert ws.frames.rollbacks.empty

    # the right person can: the refusals above were about identity, not the set-up
    run = approvals.approve(ws, "release/1/install_25", user="alice", comment="go")
    assert str(run.status) == "waiting" and served(state) == recorded(ws) == {"blue": 75, "green": 25}
    # with traffic moved, strangers still cannot roll back or move it
    for who in ("mallory", "carol"):
        for args in (("rollback", "release/1"), ("traffic", "shop", "--set", "0"), ("approve", "release/1/install_100")):
            assert cli(workspace, args, who)[0] == 3, (who, args)
        with pytest.raises(Unauthorized):
            traffic.rollback(ws, "release/1", user=who)
        with pytest.raises(Unauthorized):
            actions.set_weights(ws, "shop", 0, user=who)
    assert served(state) == recorded(ws) == {"blue": 75, "green": 25} and ws.frames.rollbacks.empty
    out = workspace.cli("rollback", "release/1", "-m", "canary errors", env={"JUPYTERHUB_USER": "bob"})
    assert out.code == 0, out
    assert served(state) == recorded(ws) == {"blue": 100, "green": 0} and len(ws.frames.rollbacks) == 1
    ws.close()


# -- secrets ---------------------------------------------------------------------------------------

SECRET = "sk-live-7f3a9c2e5b1d4f60a8"
PEM = "-----BEGIN TEST KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END TEST KEY-----"

NOTEBOOK = textwrap.dedent('''
    import os
    import workbench
    token = os.environ["TOKEN"]
    print("calling the API with", token)
    workbench.record("endpoint", "https://deploy:" + token + "@api.example.org/v1")
    workbench.record("settings", {"token": token, "retries": 3})
    raise ValueError("the API refused the token " + token)
''')

JUNIT = ('<testsuite name="smoke"><testcase classname="api" name="auth">'
         '<failure message="401 for token $TOKEN">token was $TOKEN</failure></testcase></testsuite>')


def test_secrets_never_appear_in_anything_the_workbench_writes(workspace: Any, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from cryptography.fernet import Fernet

    from workbench.secrets import encrypt

    monkeypatch.setenv("WORKBENCH_SECRET_KEY", Fernet.generate_key().decode())
    route, _ = command_route(tmp_path / "lb")
    workspace.write("release.yaml", release_yaml(route))
    with workspace.open() as ws:
        token, pem = encrypt(SECRET, ws), encrypt(PEM, ws)
    (workspace.root / "notebooks").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(workspace.root / "notebooks" / "leak.ipynb"))
    leaky = {"leaky": {
        "secure_variables": {"TOKEN": token, "PEM": pem},
        "stages": [{"s": {"jobs": {
            "echo": {"tasks": [{"script": 'echo "token=$TOKEN"; echo "$PEM"; printf "%s" "$TOKEN" >&2; echo'}]},
            "long_line": {"tasks": [{"exec": {"command": "python3", "arguments": [
                "-c", "import os,sys; sys.stdout.write(('x'*70001 + os.environ['TOKEN'])*5 + os.environ['PEM'])"]}}]},
            "notebook": {"tasks": [{"notebook": {"path": "notebooks/leak.ipynb"}}]},
            "junit": {"tasks": [{"script": f"echo '{JUNIT}' | sed \"s/\\$TOKEN/$TOKEN/g\" > report.xml"}],
                      "artifacts": [{"test": {"source": "report.xml"}}]},
            "fails": {"tasks": [{"script": 'echo "$TOKEN"; exit 3'}]},
        }}}],
    }}
    workspace.write("release.yaml", release_yaml(route, leaky))
    outputs: list[str] = []
    run = workspace.cli("run", "leaky")
    assert run.code == 1, run  # the notebook and `fails` fail, on purpose
    outputs.append(run.out + run.err)
    report = workspace.cli("report", "-o", str(tmp_path / "report.html"), timeout=300)
    assert report.code == 0 and "Traceback" not in report.err, report
    outputs.append(report.out + report.err)
    # the read-only commands in this process (same click commands, without paying the start-up 15 times)
    from click.testing import CliRunner

    from workbench.cli import main

    runner = CliRunner()
    for args in (["status"], ["status", "--format", "json"], ["history", "--format", "json"], ["history", "--format", "csv"],
                 ["history"], ["logs", "leaky/1/s/echo"], ["logs", "leaky/1/s/long_line"], ["logs", "leaky/1/s/notebook"],
                 ["logs", "leaky/1/s/fails"], ["logs", "leaky/1/s/junit"], ["audit"], ["approvals"],
                 ["artifacts", "leaky/1", "--format", "json"], ["export", str(tmp_path / "snapshot")],
                 ["export", str(tmp_path / "snapshot.zip")], ["export", str(tmp_path / "csv.csv")]):
        result = runner.invoke(main, ["-w", str(workspace.root), *args])
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        outputs.append(result.output)
    assert (tmp_path / "report.html").is_file() and (tmp_path / "snapshot").is_dir()
    needles = [SECRET.encode(), PEM.splitlines()[1].encode(), SECRET[:10].encode()]

    def leaks(data: bytes) -> list[bytes]:
        return [n for n in needles if n in data]

    for text in outputs:
        assert not leaks(text.encode()), text[-3000:]
    logs = "".join(p.read_text() for p in (workspace.root / ".workbench" / "logs").rglob("*.log"))
    assert logs.count("********") >= 10 and "token=********" in logs  # masked, not dropped
    # every file the workbench wrote: store (raw bytes, WAL too), logs, executed notebooks, artifacts, exports, report
    own = {workspace.root / ".workbench" / "secret.key"}
    job_files = workspace.root / ".workbench" / "work"  # what the jobs themselves wrote (their report.xml) is theirs
    checked = 0
    for path in [*workspace.root.rglob("*"), *tmp_path.glob("snapshot*/**/*"), *tmp_path.glob("*.zip"),
                 *tmp_path.glob("*.csv"), tmp_path / "report.html"]:
        if not path.is_file() or path in own or job_files in path.parents:
            continue
        data = path.read_bytes()
        if path.suffix == ".zip":
            import zipfile

            with zipfile.ZipFile(path) as z:
                data = b"".join(z.read(n) for n in z.namelist())
        if path.name == "report.xml":  # the job's own test report, stored as it wrote it (its checksum is recorded)
            continue
        assert not leaks(data), (path, leaks(data))
        checked += 1
    assert checked >= 15
    with workspace.open() as ws:
        for name in ws.frames.names():
            text = getattr(ws.frames, name).to_csv()
            assert not leaks(text.encode()), (name, leaks(text.encode()))
        values = ws.frames.values
        assert "********" in values[values["key"] == "endpoint"].iloc[0]["value"]
        jobs = ws.frames.job_runs.set_index("job")
        assert "********" in jobs.loc["notebook", "reason"]
        tests = ws.frames.test_results
        assert len(tests) == 1 and "********" in tests.iloc[0]["message"]


def test_key_file_must_be_private(workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_SECRET_KEY", raising=False)
    workspace.write("p.yaml", "pipelines: {p: {stages: [s: {jobs: {j: {tasks: [script: 'echo $T']}}}]}}\n")
    made = workspace.cli("encrypt", "hush")
    assert made.code == 0, made
    key = workspace.root / ".workbench" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    workspace.write("p.yaml", "pipelines: {p: {secure_variables: {T: '%s'}, stages: [s: {jobs: {j: {tasks: [script: 'echo $T']}}}]}}\n"
                    % made.out.strip())
    assert workspace.cli("run", "p", "-q").code == 0
    os.chmod(key, 0o644)
    out = workspace.cli("run", "p", "-q")  # a real process: refused before anything runs
    assert out.code == 2 and "mode 0644" in out.err and "chmod 600" in out.err and "Traceback" not in out.err, out
    for mode in (0o644, 0o640, 0o604, 0o660):
        os.chmod(key, mode)
        for args in (("encrypt", "again"), ("run", "p", "-q")):
            code, err = cli(workspace, args, "alice")
            assert code == 2 and f"mode {mode:04o}" in err and "chmod 600" in err, (mode, args, err)
    with workspace.open() as ws:
        assert len(ws.store.pipeline_runs("p")) == 1  # the refused runs never started
        with ws.engine() as engine:  # what tick/serve do: a run already triggered fails, saying why
            run = engine.drive(engine.trigger("p"))
        assert str(run.status) == "failed"
        reason = ws.frames.job_runs.iloc[-1]["reason"]
        assert "could not start" in reason and "mode 0660" in reason, reason
        assert invariant_violations(workspace.root / ".workbench" / "store.db") == []
    os.chmod(key, 0o600)
    assert cli(workspace, ("run", "p", "-q"), "alice")[0] == 0
    # the same check for a key file named by $WORKBENCH_SECRET_KEY_FILE
    other = workspace.root / "elsewhere.key"
    other.write_bytes(key.read_bytes())
    os.chmod(other, 0o644)
    monkeypatch.setenv("WORKBENCH_SECRET_KEY_FILE", str(other))
    code, err = cli(workspace, ("run", "p", "-q"), "alice")
    assert code == 2 and "mode 0644" in err, err
    with workspace.open() as ws:
        from workbench.secrets import encrypt

        with pytest.raises(SecretError, match="mode 0644"):
            encrypt("x", ws)
