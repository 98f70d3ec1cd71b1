"""Issue 15's import target: `workbench import-gocd` of a 1,000-pipeline cruise-config.xml in <= 3 s,
beside a baseline from the same run: defusedxml parsing the same file alone (in its own fresh process too).

    PYTHONPATH=. python benchmarks/bench_import.py [N]

Both are timed as wall time of a fresh process (``sys.executable``), so interpreter start-up is in both.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPE = """    <pipeline name="p{i}" labeltemplate="${{COUNT}}">
      <params><param name="app">a{i}</param></params>
      <materials>
        <git url="https://example.org/r{i}.git" branch="main" materialName="src" />
        {dep}
      </materials>
      <stage name="build">
        <jobs><job name="compile"><tasks><exec command="make"><arg>#{{app}}</arg></exec></tasks>
          <artifacts><artifact type="build" src="out" dest="pkg" /></artifacts></job></jobs>
      </stage>
      <stage name="deploy"><approval type="manual" />
        <jobs><job name="ship"><tasks><fetchartifact pipeline="" stage="build" job="compile" srcdir="pkg" />
          <exec command="./deploy.sh" /></tasks></job></jobs>
      </stage>
    </pipeline>
"""


def make_xml(n: int) -> str:
    groups = []
    for g in range(0, n, 100):
        body = "".join(PIPE.format(i=i, dep=f'<pipeline pipelineName="p{i - 1}" stageName="build" />' if i % 100 else "")
                       for i in range(g, min(g + 100, n)))
        groups.append(f'  <pipelines group="g{g // 100}">\n{body}  </pipelines>\n')
    return ('<?xml version="1.0" encoding="utf-8"?>\n<cruise schemaVersion="139">\n  <server />\n'
            + "".join(groups) + "</cruise>\n")


def timed(args: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{args[:4]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return took


def main(n: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        xml = root / "cruise-config.xml"
        xml.write_text(make_xml(n))
        parse = [sys.executable, "-c", "import sys, defusedxml.ElementTree as E; E.parse(sys.argv[1])", str(xml)]
        base = min(timed(parse, root) for _ in range(3))
        ours = []
        for k in range(3):
            ours.append(timed([sys.executable, "-m", "workbench", "import-gocd", str(xml), "--out", str(root / f"o{k}")],
                              root))
        best = min(ours)
        size = xml.stat().st_size / 1e6
        print(f"| import-gocd, {n} pipelines ({size:.1f} MB XML) | {best:.2f} s | defusedxml parse alone: "
              f"{base:.2f} s ({best / base:.1f}x) | <= 3 s: {'met' if best <= 3 else 'NOT met'} ({best:.2f} s) |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
