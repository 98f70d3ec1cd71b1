"""`make demo`'s release path, end to end, as a user runs it (a real nginx when installed)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, require_service


def test_repository_pipelines_validate() -> None:
    p = subprocess.run([sys.executable, "-m", "workbench", "-w", str(REPO), "validate"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "ok: 8 pipelines" in p.stdout


def test_demo_runs_the_shops_release(tmp_path: Path) -> None:
    require_service(shutil.which("nginx") is not None or os.access("/usr/sbin/nginx", os.X_OK), "nginx")
    target = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-m", "workbench.demo", "--workspace", str(target)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "a real nginx" in p.stdout
    assert "install_prod_100 approved -> run passed  measured split green 100% of 200 requests" in p.stdout

    from workbench import Workspace

    ws = Workspace.open(target)
    runs = ws.frames.pipeline_runs
    counts = runs.groupby("pipeline").size().to_dict()
    # the commit to ui triggered only ui and qa_deploy; the commit to db only db
    assert counts == {"db": 2, "batch": 1, "search": 1, "api": 1, "ui": 2, "qa_deploy": 2,
                      "promote_qa_to_prod": 1, "prod_deploy": 1}
    prod = ws.store.get_pipeline_run("prod_deploy", 1)
    assert prod.status.value == "passed"
    qa2 = ws.store.get_pipeline_run("qa_deploy", 2)
    labels = {k: v.get("label") for k, v in qa2.revisions.items()}
    assert labels == {"search": "2.1.1", "api": "3.4.1", "ui": "5.0.2"}
    audit = ws.frames.approvals
    assert {"carol", "alice"} <= set(audit["user"])
    # the packages really moved from qa to prod
    assert (target / ".workbench" / "packages" / "prod").is_dir()
    ws.close()

    # issue 16 defect 1, issue 19 item 3: the demo's last lines say how to act as carol, and doing so works
    # although the demo stopped its nginx (the route starts it again)
    hint = [ln.strip() for ln in p.stdout.splitlines() if ln.strip().startswith("JUPYTERHUB_USER=carol")]
    assert hint, p.stdout[-3000:]
    command = hint[0].split("   #")[0].split()
    env = {**os.environ, command[0].split("=")[0]: command[0].split("=")[1]}
    argv = [sys.executable, "-m", "workbench", *[a.strip("'") for a in command[2:]]]
    argv = argv[:argv.index("-m", 3)] + ["-m", "QA ok"] if "-m" in argv[3:] else argv
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        ws = Workspace.open(target)
        assert ws.store.get_pipeline_run("qa_deploy", 2).status.value in ("passed", "waiting")
        stages = ws.frames.stage_runs
        qa2 = stages[(stages["pipeline"] == "qa_deploy") & (stages["counter"] == 2)]
        assert "failed" not in set(qa2["status"]), qa2[["stage", "status", "reason"]]
        ws.close()
    finally:
        for pid_file in (target / ".workbench" / "demo-traffic" / "nginx").glob("*/nginx.pid"):
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (OSError, ValueError):
                pass
