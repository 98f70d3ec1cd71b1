"""Runs N notebook tasks as a Ploomber pipeline; executed by the Ploomber peer's interpreter (benchmarks/.venvs/ploomber).

``python ploomber_runner.py NOTEBOOK OUT_DIR SIZES REPEAT WORKERS`` prints
``{"<size>": [seconds, ...]}``. Each size is a ``pipeline.yaml`` of
``size`` independent tasks running the same notebook with parameter ``x``,
built with Ploomber's parallel executor (``WORKERS`` processes, the same
concurrency the workbench gets) and ``force=True`` so every build executes
every notebook. One untimed build first (imports, kernel specs).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def pipeline_yaml(notebook: str, out: Path, n: int, workers: int) -> Path:
    lines = ["executor:", "  dotted_path: ploomber.executors.Parallel", f"  processes: {workers}", "tasks:"]
    for i in range(n):
        lines += [f"  - source: {notebook}", f"    name: nb{i}", f"    product: {out / f'nb{i}.ipynb'}",
                  f"    params: {{x: {i}}}", "    executor_params: {progress_bar: false}"]
    path = out / f"pipeline-{n}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    notebook, out_dir, sizes, repeat, workers = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    os.environ.setdefault("PLOOMBER_STATS_ENABLED", "false")
    from ploomber.spec import DAGSpec

    out: dict[str, list[float]] = {}
    for k, n in enumerate(int(s) for s in sizes.split(",")):
        folder = out_dir / f"ploomber-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        spec_path = pipeline_yaml(notebook, folder, n, workers)
        samples = []
        warm = 1 if k == 0 else 0
        for i in range(repeat + warm):
            for f in folder.glob("nb*.ipynb"):
                f.unlink()
            dag = DAGSpec(str(spec_path)).to_dag()
            t = time.perf_counter()
            dag.build(force=True, show_progress=False)
            wall = time.perf_counter() - t
            done = len(list(folder.glob("nb*.ipynb")))
            if done != n:
                raise SystemExit(f"ploomber wrote {done} of {n} executed notebooks")
            if i >= warm:
                samples.append(wall)
        out[str(n)] = samples
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
