"""The dashboard's Metrics tab in a real Chromium: from the click to every chart drawn (issue 16 defect 10).

Before and after in the same run, on the same history: the demo's workspace
(``python -m workbench.demo``) is made once with the *before* code, copied, and
each copy is served by ``workbench dashboard`` (Voila) with its own code on
``PYTHONPATH``: the before code from ``git archive --before REV`` (default
``main``), the after code from this checkout. Playwright opens the page, waits
for the board, leaves the page alone for ``--settle`` seconds (a person reading
the board, while plotly is imported in the background), clicks "Metrics" and
stops the clock when the text of all six charts' titles is in plotly's SVG.
Each repeat is a fresh page load (a fresh kernel).

    .venv/bin/python benchmarks/bench_dashboard_browser.py --before d709e3d --repeat 3
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TITLES = ("Change lead time per commit", "Deployment frequency", "Change fail rate",
          "Failed deployment recovery time", "Deployment rework rate", "Stage durations")
DRAWN = """titles => {
  const text = Array.from(document.querySelectorAll('.js-plotly-plot text')).map(t => t.textContent).join('|');
  return titles.every(t => text.includes(t));
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(code: Path, ws: Path, log: Path) -> Iterator[str]:
    """``workbench dashboard`` with ``code`` first on the path, in its own session; stopped with its group."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(code), "WORKBENCH_WORKSPACE": str(ws), "JUPYTERHUB_USER": "alice",
           "JUPYTER_RUNTIME_DIR": str(ws.parent / f"runtime-{port}")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "dashboard", "--port", str(port)], cwd=ws,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"workbench dashboard exited with {proc.returncode}; see {log}")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the dashboard does not listen after 90 s; see {log}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def metrics_tab_seconds(url: str, repeat: int, settle: float, limit: float) -> tuple[list[float | None], int, list[str]]:
    """Seconds from the click on "Metrics" to all six charts drawn, per fresh page (None: not within ``limit``);
    the plotly figures in the page; for a page that did not draw them all, the titles it did draw."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    times: list[float | None] = []
    widgets, missing = 0, []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            for _ in range(repeat):
                page = browser.new_page(viewport={"width": 1920, "height": 1080})
                page.goto(url, timeout=120_000)
                page.wait_for_selector(".wb-board-html [data-stage]", timeout=120_000)
                time.sleep(settle)
                t0 = time.monotonic()
                page.get_by_role("tab", name="Metrics").click()
                try:
                    page.wait_for_function(DRAWN, arg=list(TITLES), timeout=limit * 1000, polling=50)
                    times.append(time.monotonic() - t0)
                except PlaywrightTimeout:
                    times.append(None)
                    text = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot text'))"
                                         ".map(t => t.textContent).join('|')")
                    missing.append(", ".join(t for t in TITLES if t in text) or "none")
                widgets = page.locator(".js-plotly-plot").count()
                page.close()
        finally:
            browser.close()
    return times, widgets, missing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="main", help="git revision of the code measured as 'before' (default main)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds the board shows before the click")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds to wait for the charts before giving up")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wb-bench-dash-") as tmp:
        root = Path(tmp)
        before = root / "before-code"
        before.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "workbench", "notebooks", "pipelines"], cwd=REPO,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        demo = root / "demo"
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "workbench.demo", "--workspace", str(demo)], cwd=before, check=True,
                       env={**os.environ, "PYTHONPATH": str(before)}, stdout=subprocess.DEVNULL)
        print(f"demo workspace made with the before code in {time.monotonic() - t:.1f} s")
        results = {}
        for name, code in (("before", before), ("after", REPO)):
            ws = root / f"ws-{name}"
            shutil.copytree(demo, ws, symlinks=True)
            with serving(code, ws, root / f"{name}.log") as url:
                results[name] = metrics_tab_seconds(url, args.repeat, args.settle, args.limit)
        load = os.getloadavg()
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load[0]:.1f}; "
              f"Chromium 1920x1080, {args.repeat} fresh pages each; click on Metrics -> all six charts drawn")
        for name, (times, widgets, missing) in results.items():
            done = [x for x in times if x is not None]
            each = ", ".join(f"{x:.2f}" if x is not None else f"not drawn in {args.limit:.0f} s" for x in times)
            med = f"median {statistics.median(done):.2f} s" if done else "never drawn"
            print(f"  {name:6s} ({widgets} plotly figure{'s' if widgets != 1 else ''} in the page): {med}  "
                  f"(each: {each})")
            for m in missing:
                print(f"         a page that did not draw them all showed the titles of: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
