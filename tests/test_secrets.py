"""Secure variables: encryption, keys, and plain values never leaving the job.

A secret's plain value must reach the job's environment and appear nowhere
else: not in logs, executed notebooks, the store, the frames or CLI output.
The strongest check is the last test: after a run that prints the secret
every way it can, no file under the workspace (store and WAL, logs, job
folders, executed notebooks, artifacts) holds its bytes.
"""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from workbench import Workspace
from workbench.config.model import Config, GenericTask, Job, Pipeline, Stage
from workbench.errors import SecretError
from workbench.secrets import MASK, decrypt_variables, encrypt, generate_key, key_path, mask, mask_data, rotate
from workbench.status import Status
from workbench.tasks.process import OutputPump

pytestmark = pytest.mark.timeout(180)

SECRET = "s3cr3t-Pa55-xyzzy-4711"
OTHER = "db-pw-QWERTY-0815"


def plain_ws(tmp_path: Path) -> Workspace:
    (tmp_path / "pipelines").mkdir(exist_ok=True)
    return Workspace.open(tmp_path)


# -- keys and ciphertext ------------------------------------------------------------------


def test_encrypt_creates_a_0600_key_file_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_SECRET_KEY", raising=False)
    monkeypatch.delenv("WORKBENCH_SECRET_KEY_FILE", raising=False)
    ws = plain_ws(tmp_path)
    token = encrypt(SECRET, ws)
    assert SECRET not in token
    path = key_path(ws)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert decrypt_variables({"PW": token}, ws) == {"PW": SECRET}
    assert encrypt(SECRET, ws) != token  # Fernet tokens carry a fresh IV


def test_a_readable_key_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_SECRET_KEY", raising=False)
    ws = plain_ws(tmp_path)
    token = encrypt(SECRET, ws)
    os.chmod(key_path(ws), 0o644)
    with pytest.raises(SecretError, match="mode 0644; it must be 0600"):
        decrypt_variables({"PW": token}, ws)


def test_key_from_the_environment_and_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = plain_ws(tmp_path)
    old, new = generate_key(), generate_key()
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", old)
    token = encrypt(SECRET, ws)
    assert not key_path(ws).exists()  # the environment's key is used, no file is made
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", new)
    with pytest.raises(SecretError, match="secure variable PW cannot be decrypted with this key") as err:
        decrypt_variables({"PW": token}, ws)
    assert SECRET not in str(err.value)
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", f"{new},{old}")  # new key first, old still decrypts
    assert decrypt_variables({"PW": token}, ws) == {"PW": SECRET}
    rotated = rotate(token, ws)
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", new)
    assert decrypt_variables({"PW": rotated}, ws) == {"PW": SECRET}


def test_bad_keys_and_gocd_values_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = plain_ws(tmp_path)
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", "not-a-key")
    with pytest.raises(SecretError, match="not a valid Fernet key"):
        encrypt("x", ws)
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", generate_key())
    with pytest.raises(SecretError, match="GoCD 'AES:' value"):
        decrypt_variables({"PW": "AES:abc:def"}, ws)


def test_no_key_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_SECRET_KEY", raising=False)
    ws = plain_ws(tmp_path)
    with pytest.raises(SecretError, match="no secret key: set WORKBENCH_SECRET_KEY or run `workbench encrypt`"):
        decrypt_variables({"PW": "gAAAA"}, ws)


# -- masking primitives ----------------------------------------------------------------------


def test_mask_longest_first_and_nested() -> None:
    assert mask(f"a {SECRET} b {SECRET[:6]}", [SECRET[:6], SECRET]) == f"a {MASK} b {MASK}"
    assert mask_data({"x": [SECRET, ("y", SECRET)], "n": 3}, [SECRET]) == {"x": [MASK, ("y", MASK)], "n": 3}


def test_output_pump_masks_a_secret_split_across_reads(tmp_path: Path) -> None:
    """The pump sees the child's output in arbitrary chunks; a secret cut in two must still be masked."""
    r, w = os.pipe()
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log, os.fdopen(r, "rb") as reader:
        pump = OutputPump(log, [SECRET])
        t = pump.start(reader)
        with os.fdopen(w, "wb", buffering=0) as writer:
            half = len(SECRET) // 2
            writer.write(b"x" * 70000 + SECRET[:half].encode())  # no newline: a partial line
            threading.Event().wait(0.05)
            writer.write(SECRET[half:].encode() + b" tail\n" + SECRET.encode())  # and one at EOF without newline
        t.join(timeout=10)
    data = log_path.read_bytes()
    assert SECRET.encode() not in data
    assert data.count(MASK.encode()) == 2 and data.endswith(MASK.encode())


def test_masking_hook_masks_the_outcome_before_the_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A task failing with the secret in its message: the job's reason is stored masked."""
    from workbench.tasks import RUNNERS, TaskError, register_task_runner

    def leaky(task: Any, ctx: Any) -> Any:
        raise TaskError(f"cannot log in with password {os.environ.get('NOPE', '')}{ctx.spec.env['PW']}")

    register_task_runner("leaky", leaky)
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", generate_key())
    try:
        ws = plain_ws(tmp_path)
        token = encrypt(SECRET, ws)
        p = Pipeline("p", (Stage("s", (Job("j", (GenericTask("leaky"),), secure_variables={"PW": token}),)),))
        ws.__dict__["config"] = Config(pipelines={"p": p})
        run = ws.run("p")
        assert run.status == Status.FAILED
        reason = ws.frames.job_runs.loc[0, "reason"]
        assert "cannot log in with password ********" in reason and SECRET not in reason
        assert SECRET not in Path(ws.frames.job_runs.loc[0, "log_path"]).read_text()
    finally:
        RUNNERS.pop("leaky", None)


# -- end to end: a run that prints its secrets every way it can ---------------------------------

NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
         "source": "greeting = 'hi'"},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "import os\nsecret = os.environ['API_TOKEN']\nprint('notebook sees', secret)\nsecret"},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "from IPython.display import display, HTML\ndisplay(HTML('<b>' + secret + '</b>'))"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                 "language_info": {"name": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def _notebooks_available() -> bool:
    import workbench.features
    from workbench.tasks import RUNNERS

    workbench.features.load()
    return "notebook" in RUNNERS


def _pipeline_yaml(ws_root: Path, api_token: str, db_pw: str, with_notebook: bool) -> str:
    import hashlib

    digest = hashlib.sha256(SECRET.encode()).hexdigest()  # the job proves it got the value without us writing it
    nb_job = """
            nb:
              tasks:
                - notebook: {path: notebooks/leak.ipynb}""" if with_notebook else ""
    return f"""
format_version: 10
environments:
  prod:
    pipelines: [leak]
    secure_variables:
      DB_PW: {db_pw}
pipelines:
  leak:
    group: g
    secure_variables:
      API_TOKEN: {api_token}
    stages:
      - use:
          jobs:
            shell:
              tasks:
                - script: |
                    echo "token length ${{#API_TOKEN}}"
                    echo "token=$API_TOKEN db=$DB_PW"
                    echo "to stderr: $API_TOKEN" >&2
                    printf '%s' "$DB_PW"
                    python3 -c "import hashlib, os; print(hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest() == '{digest}' and 'plain value reached the job')"
                - script: env | sort
            {nb_job}
      - fail:
          jobs:
            bad:
              tasks:
                - script: echo "failing with $API_TOKEN"; exit 3
"""


def test_secrets_never_leave_the_job(workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_key()
    monkeypatch.setenv("WORKBENCH_SECRET_KEY", key)
    with_notebook = _notebooks_available()
    assert with_notebook, "the notebook task kind is missing: executed notebooks must be covered"
    ws = workspace.open()
    api_token, db_pw = encrypt(SECRET, ws), encrypt(OTHER, ws)
    workspace.write("leak.yaml", _pipeline_yaml(workspace.root, api_token, db_pw, with_notebook))
    if with_notebook:
        (workspace.root / "notebooks").mkdir()
        (workspace.root / "notebooks" / "leak.ipynb").write_text(json.dumps(NOTEBOOK))
    env = {"WORKBENCH_SECRET_KEY": key}

    run = workspace.cli("run", "leak", env=env)
    assert run.code == 1, run.err  # the second stage fails on purpose (its message names the secret)
    outputs = {"run": run.out + run.err}
    for args in (["logs", "leak/1/use/shell"], ["logs", "leak/1/fail/bad"], ["history", "--format", "json"],
                 ["status", "--format", "json"], ["audit", "--format", "json"], ["validate"]):
        r = workspace.cli(*args, env=env)
        outputs[" ".join(args)] = r.out + r.err
    if with_notebook:
        r = workspace.cli("logs", "leak/1/use/nb", env=env)
        outputs["logs nb"] = r.out + r.err

    # the plain values reached the job
    shell_log = outputs["logs leak/1/use/shell"]
    assert "plain value reached the job" in shell_log
    assert f"token length {len(SECRET)}" in shell_log
    assert f"token={MASK} db={MASK}" in shell_log and f"to stderr: {MASK}" in shell_log
    assert f"API_TOKEN={MASK}" in shell_log and f"DB_PW={MASK}" in shell_log  # `env | sort`
    assert f"failing with {MASK}" in outputs["logs leak/1/fail/bad"]
    if with_notebook:
        assert f"notebook sees {MASK}" in outputs["logs nb"]

    # ...and nowhere else: CLI output
    for name, text in outputs.items():
        assert SECRET not in text and OTHER not in text, f"secret in `workbench {name}` output"

    # frames
    ws = workspace.open()
    for name in ws.frames.names():
        df = getattr(ws.frames, name)
        dump = df.to_json(orient="records", date_format="iso", default_handler=str)
        assert SECRET not in dump and OTHER not in dump, f"secret in frame {name}"

    # every file of the workspace: store (and WAL), logs, job folders, executed notebooks, artifacts
    scanned, notebooks = 0, []
    for path in workspace.root.rglob("*"):
        if not path.is_file() or path.name == "secret.key":
            continue
        data = path.read_bytes()
        scanned += 1
        if path.suffix == ".ipynb" and ".workbench" in path.parts:
            notebooks.append(path)
        assert SECRET.encode() not in data and OTHER.encode() not in data, f"secret in {path}"
    assert any(p.name == "store.db" for p in (workspace.root / ".workbench").iterdir())
    assert scanned > 5
    if with_notebook:
        assert notebooks, "the executed notebook was not kept"
        executed = json.loads(notebooks[0].read_text())
        text = json.dumps(executed)
        assert MASK in text  # the secret was there and was masked, not just absent


def test_encrypt_command(workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKBENCH_SECRET_KEY", raising=False)
    monkeypatch.delenv("WORKBENCH_SECRET_KEY_FILE", raising=False)
    env = {"WORKBENCH_SECRET_KEY": "", "WORKBENCH_SECRET_KEY_FILE": ""}
    r = workspace.cli("encrypt", SECRET, env=env)
    assert r.code == 0, r.err
    token = r.out.strip()
    assert SECRET not in r.out + r.err and token.startswith("gAAAAA")
    key = workspace.root / ".workbench" / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    r = workspace.cli("encrypt", env=env, input=SECRET + "\n")  # from stdin, so it stays out of shell history
    assert r.code == 0 and SECRET not in r.out
    assert decrypt_variables({"A": token, "B": r.out.strip()}, Workspace.open(workspace.root)) == {"A": SECRET, "B": SECRET}
    os.chmod(key, 0o640)
    r = workspace.cli("encrypt", "x", env=env)
    assert r.code == 2 and "must be 0600 (chmod 600" in r.err and "Traceback" not in r.err
