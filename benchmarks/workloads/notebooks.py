"""Workload (d): a stage of 8 and of 32 trivial notebook jobs.

The notebook and the papermill CLI call are bench_notebooks.py's (issue 4's
script), imported, not copied. Against, from the same run:

* N sequential ``papermill`` CLI runs (what a cron script does today);
* N sequential in-process ``papermill.execute_notebook`` calls (the floor
  for one process executing notebooks one at a time);
* Ploomber building a pipeline of the same N notebooks with its parallel
  executor, as many processes as we have job slots.

Ours: the workbench in a long-lived process (JupyterLab, ``workbench serve``),
its kernel pool warm after an untimed first run, ``max_parallel`` = CPUs.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import HERE, med, nproc, run_json, timed

from bench_notebooks import papermill_cli, write_workspace  # noqa: E402  (issue 4's script)


def pipelines_yaml(sizes: list[int]) -> str:
    lines = ["format_version: 10", "pipelines:"]
    for n in sizes:
        lines += [f"  nb{n}:", "    group: bench", "    stages:", "      - run:", "          jobs:"]
        for i in range(n):
            lines += [f"            nb{i}:", "              tasks:",
                      f"                - notebook: {{path: notebooks/trivial.ipynb, parameters: {{x: {i}}}}}"]
    return "\n".join(lines) + "\n"


def ploomber_notebook(src: Path, dest: Path) -> Path:
    """The same notebook with the ``product``/``upstream`` parameters Ploomber injects declared."""
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = "upstream = None\nproduct = None\n" + source
    dest.write_text(json.dumps(nb))
    return dest


def measure(sizes: list[int], repeat: int, *, cli_runs: int | None = None, peer: Any = None) -> dict[str, Any]:
    """Seconds per size for every contender (Ploomber: one timed build per size, after a warm-up);
    ``cli_runs`` caps the papermill CLI runs actually made (see below)."""
    import papermill

    from workbench import Workspace
    from workbench.status import Status

    parallel = nproc()
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-nb-"))
    res: dict[str, Any] = {"cli": {}, "cli_measured": {}, "inproc": {}, "ours": {}, "ploomber": {}, "notes": []}
    try:
        root = tmp / "ws"
        nb = write_workspace(root)
        (root / "pipelines" / "sizes.gocd.yaml").write_text(pipelines_yaml(sizes))
        out = tmp / "out"
        out.mkdir()

        # -- the papermill CLI, sequential ------------------------------------------------
        # every CLI run is the same work: ``cli_runs`` of them are measured once, a size that
        # is larger gets their median times its size (and says so)
        k = max(sizes) if cli_runs is None else min(max(sizes), cli_runs)
        runs = [timed(lambda i=i: papermill_cli(nb, out / f"cli-{i}.ipynb")) for i in range(k)]
        for n in sizes:
            res["cli_measured"][n] = min(n, k)
            res["cli"][n] = sum(runs[:n]) if n <= k else med(runs) * n

        # -- ours, long-lived process -------------------------------------------------------
        ws = Workspace.open(root)
        ws.config  # noqa: B018
        with ws.engine(max_parallel=parallel) as engine:
            first = engine.run(f"nb{sizes[0]}")  # imports papermill, boots the pool: untimed
            if first.status != Status.PASSED:
                raise RuntimeError(f"{first.locator} {first.status}: {first.reason}")
            time.sleep(2)  # the pool's replacement kernels finish booting, as between real jobs
            for n in sizes:
                samples = []
                for _ in range(repeat):
                    t = time.perf_counter()
                    run = engine.run(f"nb{n}")
                    samples.append(time.perf_counter() - t)
                    if run.status != Status.PASSED:
                        raise RuntimeError(f"{run.locator} {run.status}: {run.reason}")
                    time.sleep(2)
                res["ours"][n] = med(samples)
        ws.close()

        # -- papermill.execute_notebook in this process, sequential --------------------------
        papermill.execute_notebook(str(nb), str(out / "warm.ipynb"), parameters={"x": 0}, progress_bar=False)
        for n in sizes:
            res["inproc"][n] = timed(lambda: [papermill.execute_notebook(
                str(nb), str(out / f"pm-{n}-{i}.ipynb"), parameters={"x": i}, progress_bar=False) for i in range(n)])

        # -- Ploomber, in its own environment ------------------------------------------------
        if peer is not None:
            pnb = ploomber_notebook(nb, tmp / "ploomber-trivial.ipynb")
            got = run_json([str(peer.python), str(HERE / "workloads" / "ploomber_runner.py"), str(pnb), str(out),
                            ",".join(map(str, sizes)), "1", str(parallel)],
                           env=peer.env(), cwd=tmp, timeout=1200)
            res["ploomber"] = {int(k): med(v) for k, v in got.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == "__main__":  # quick look: python benchmarks/workloads/notebooks.py 8
    sys.path.insert(0, str(HERE))
    print(measure([int(a) for a in sys.argv[1:]] or [8], 1, cli_runs=2))
