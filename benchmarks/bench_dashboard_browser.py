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

``--scale WS [WS ...]`` (issue 17) measures this checkout's dashboard on large
workspaces instead (e.g. ``/work/scale/e10k``, made by ``workloads/estate.py``
and one ``tick``): each is copied (its store, parse cache, pipeline files; the
copy's materials still point at the original's repositories, nothing is
written there), served by ``workbench dashboard`` with a live refresh every
0.1 s, and for each fresh page it prints the first view (``goto`` until the
board's first page and its counts show), every tab (click until its content is
drawn), the next page and a filter, and a refresh after one stage changes (one
stage run's status set to ``failed`` in the copy's store, until that cell and
then the counts show it). The baseline, in the same browser in the same run,
is a blank Voila notebook's first view (one ipywidgets HTML widget) served the
same way from the same workspace.

    .venv/bin/python benchmarks/bench_dashboard_browser.py --scale /work/scale/e1k /work/scale/e10k --repeat 3

``--pool-size N [N ...]`` (default ``1 0``) serves each copy once per pool size,
alternating: 1 is ``workbench dashboard``'s default (a pre-heated kernel has
run the notebook before the visitor comes; the page is opened once that
kernel's process tree has gone quiet, its seconds since the server started
printed as "pre-heat"), 0 a fresh kernel per visitor (as before). The blank
notebook is served with the same pool size beside each.
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
from typing import Any, Iterator

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
def serving(code: Path, ws: Path, log: Path, extra: list[str] | None = None) -> Iterator[tuple[str, int]]:
    """``workbench dashboard`` with ``code`` first on the path, in its own session; stopped with its group."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(code), "WORKBENCH_WORKSPACE": str(ws), "JUPYTERHUB_USER": "alice",
           "JUPYTER_RUNTIME_DIR": str(ws.parent / f"runtime-{port}")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "workbench", "dashboard", "--port", str(port), *(extra or [])],
                                cwd=ws,
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
            yield f"http://127.0.0.1:{port}/", proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def wait_quiet(server_pid: int, limit: float, quiet: float = 0.05) -> float | None:
    """Seconds until a kernel under ``server_pid`` exists and the whole process tree used under ``quiet`` s of CPU
    in a second (the pre-heated kernel has run the notebook and its warm-ups); None if not within ``limit``."""
    import psutil

    t0 = time.monotonic()
    server = psutil.Process(server_pid)

    def cpu() -> tuple[float, bool]:
        total, kernel = 0.0, False
        for p in [server, *server.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                total += c.user + c.system
                kernel = kernel or "ipykernel" in " ".join(p.cmdline())
        return total, kernel

    before, _ = cpu()
    while time.monotonic() - t0 < limit:
        time.sleep(1.0)
        now, kernel = cpu()
        if kernel and now - before < quiet:
            return time.monotonic() - t0 - 1.0
        before = now
    return None


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


BLANK = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": [
    "import ipywidgets as W\n", "W.HTML('<b class=\"wb-blank\">a blank notebook</b>')"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5}
TAB_DRAWN = {  # the tab's content drawn, per tab
    "Traffic": "() => !!document.querySelector('.wb-route') || document.body.innerText.includes('no routes are configured')",
    "Metrics": None,  # DRAWN with TITLES
    "Run": "() => document.querySelectorAll('.js-plotly-plot').length >= 3",  # metrics' one + the run's two
    "Pipelines": "() => !!document.querySelector('.wb-board-html [data-stage]') && "
                 "document.querySelector('.wb-board-html').offsetWidth > 0",
}


def _light_copy(src: Path, dst: Path) -> None:
    """What the dashboard reads: the store, the parse cache, the pipeline files (not logs or work folders)."""
    (dst / ".workbench").mkdir(parents=True)
    for name in ("store.db", "cache"):
        if (src / ".workbench" / name).is_dir():
            shutil.copytree(src / ".workbench" / name, dst / ".workbench" / name)
        elif (src / ".workbench" / name).exists():
            shutil.copy2(src / ".workbench" / name, dst / ".workbench" / name)
    for p in src.iterdir():
        if p.name in (".workbench", "repos"):
            continue
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, dst / p.name)
    if (src / "repos").exists():
        (dst / "repos").symlink_to((src / "repos").resolve())


def _fail_one_stage(store: Path, pipeline: str) -> tuple[int, str]:
    """The latest run's first stage of ``pipeline`` fails, and so the run (one committed write): its counter
    and stage."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(store)) as db, db:
        row = db.execute("SELECT s.id, r.counter, s.name, r.id FROM stage_runs s JOIN pipeline_runs r ON r.id = "
                         "s.pipeline_run_id WHERE r.pipeline = ? ORDER BY r.counter DESC, s.position, s.counter DESC "
                         "LIMIT 1", (pipeline,)).fetchone()
        if row is None:
            raise SystemExit(f"{pipeline} has no stage run to change")
        db.execute("UPDATE stage_runs SET status = 'failed' WHERE id = ?", (row[0],))
        db.execute("UPDATE pipeline_runs SET status = 'failed' WHERE id = ?", (row[3],))
    return int(row[1]), str(row[2])


def scale_page(url: str, store: Path, limit: float) -> dict[str, float | None]:
    """One fresh page of the dashboard: seconds of each step (None: not within ``limit``)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    out: dict[str, float | None] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})

            def step(name: str, act: Any, done: str, arg: Any = None) -> None:
                t0 = time.monotonic()
                act()
                try:
                    page.wait_for_function(done, arg=arg, timeout=limit * 1000, polling=20)
                    out[name] = time.monotonic() - t0
                except PlaywrightTimeout:
                    out[name] = None

            t_goto = time.monotonic()
            step("first view: the board's page", lambda: page.goto(url, timeout=limit * 1000),
                 "() => !!document.querySelector('.wb-board-html [data-stage]')")
            try:
                page.wait_for_function("() => (document.querySelector('.wb-board-summary') || {}).innerText"
                                       ".includes('showing')", timeout=limit * 1000, polling=20)
                out["first view: with the counts"] = time.monotonic() - t_goto
            except PlaywrightTimeout:
                out["first view: with the counts"] = None
            first = page.get_attribute(".wb-board-html tr[data-pipeline]", "data-pipeline")
            time.sleep(SETTLE)  # a person reading the board (the charts are built in the background meanwhile)
            for tab in ("Traffic", "Metrics", "Run", "Pipelines"):
                done = TAB_DRAWN[tab] or DRAWN
                step(f"tab {tab}", lambda tab=tab: page.get_by_role("tab", name=tab).click(), done,
                     list(TITLES) if tab == "Metrics" else None)
            step("next page", lambda: page.click(".wb-board-next"),
                 "first => { const r = document.querySelector('.wb-board-html tr[data-pipeline]');"
                 " return r && r.dataset.pipeline !== first; }", first)
            step("previous page", lambda: page.click(".wb-board-prev"),
                 "first => { const r = document.querySelector('.wb-board-html tr[data-pipeline]');"
                 " return r && r.dataset.pipeline === first; }", first)
            summary = page.inner_text(".wb-board-summary")
            counter, stage = _fail_one_stage(store, first)
            t0 = time.monotonic()
            try:
                page.wait_for_selector(f'.wb-board-html tr[data-pipeline="{first}"][data-counter="{counter}"] '
                                       f'[data-stage="{stage}"][data-status="failed"]', timeout=limit * 1000)
                out["refresh: the cell"] = time.monotonic() - t0
                page.wait_for_function("before => { const s = document.querySelector('.wb-board-summary');"
                                       " return s && s.innerText !== before; }", arg=summary,
                                       timeout=limit * 1000, polling=20)
                out["refresh: the counts"] = time.monotonic() - t0
            except PlaywrightTimeout:
                out.setdefault("refresh: the cell", None)
                out["refresh: the counts"] = None
            target = page.evaluate("() => { const r = document.querySelectorAll('.wb-board-html tr[data-pipeline]');"
                                   " return r[r.length - 1].dataset.pipeline; }")
            t0 = time.monotonic()
            page.fill(".wb-board-filter input", first[:-1] + "~")  # something matching nothing first
            page.press(".wb-board-filter input", "Enter")
            page.wait_for_function("() => (document.querySelector('.wb-board-summary') || {}).innerText"
                                   ".includes('no pipeline matches')", timeout=limit * 1000, polling=20)
            step("filter by name", lambda: (page.fill(".wb-board-filter input", target),
                                            page.press(".wb-board-filter input", "Enter")),
                 "t => { const r = document.querySelectorAll('.wb-board-html tr[data-pipeline]');"
                 " return r.length > 0 && Array.from(r).every(x => x.dataset.pipeline.includes(t)); }", target)
        finally:
            browser.close()
    return out


def blank_first_view(url: str, limit: float) -> float | None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            t0 = time.monotonic()
            page.goto(url, timeout=limit * 1000)
            try:
                page.wait_for_selector(".wb-blank", timeout=limit * 1000)
            except PlaywrightTimeout:
                return None
            return time.monotonic() - t0
        finally:
            browser.close()


SETTLE = 3.0


def scale_main(args: argparse.Namespace) -> int:
    import json

    global SETTLE
    SETTLE = args.settle
    os.environ["WORKBENCH_DASHBOARD_INTERVAL"] = "0.1"
    rows: list[tuple[str, dict[str, list[float | None]], list[float | None]]] = []
    for src in args.scale:
        with tempfile.TemporaryDirectory(prefix="wb-bench-dash-scale-") as tmp:
            root = Path(tmp)
            blank = root / "blank.ipynb"
            blank.write_text(json.dumps(BLANK))
            figures: dict[str, list[float | None]] = {}
            blanks: list[float | None] = []
            per_pool: dict[int, tuple[dict[str, list[float | None]], list[float | None]]] = {
                size: ({}, []) for size in args.pool_size}
            for i in range(args.repeat):
                for size in args.pool_size:  # alternated: the same minutes for each
                    figures, blanks = per_pool[size]
                    ws = root / f"ws{i}-{size}"
                    _light_copy(src, ws)
                    n = subprocess.run([sys.executable, "-c", ("import sys; from workbench.workspace import "
                                        "Workspace; print(len(Workspace.open(sys.argv[1]).config.pipelines))"),
                                        str(ws)], capture_output=True, text=True, check=True,
                                       env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.strip()
                    pool = ["--pool-size", str(size)]
                    with serving(REPO, ws, root / f"blank{i}-{size}.log", ["--notebook", str(blank), *pool]) as (url, pid):
                        if size:
                            wait_quiet(pid, args.limit * 3)
                        blanks.append(blank_first_view(url, args.limit))
                    with serving(REPO, ws, root / f"dash{i}-{size}.log", pool) as (url, pid):
                        if size:
                            figures.setdefault("pre-heat: server start -> kernel quiet", []).append(
                                wait_quiet(pid, args.limit * 3))
                        for k, v in scale_page(url, ws / ".workbench" / "store.db", args.limit).items():
                            figures.setdefault(k, []).append(v)
                    shutil.rmtree(ws)
            for size, (figures, blanks) in per_pool.items():
                rows.append((f"{src} ({n} pipelines), --pool-size {size}", figures, blanks))
    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load[0]:.1f}; Chromium 1920x1080, "
          f"{args.repeat} fresh pages (fresh kernels) each; tabs clicked {args.settle:.0f} s after the first view; "
          "live refresh every 0.1 s")

    def med(xs: list[float | None]) -> str:
        done = [x for x in xs if x is not None]
        each = ", ".join(f"{x:.2f}" if x is not None else "never" for x in xs)
        return (f"median {statistics.median(done):6.2f} s" if done else "never        ") + f"  (each: {each})"

    for name, figures, blanks in rows:
        print(f"  {name}")
        print(f"    {'baseline: a blank Voila notebook, first view':46s} {med(blanks)}")
        for k, xs in figures.items():
            print(f"    {k:46s} {med(xs)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=Path, nargs="+", metavar="WS",
                    help="measure this checkout on these workspaces (issue 17) instead of before/after on the demo")
    ap.add_argument("--pool-size", type=int, nargs="+", default=[1, 0],
                    help="with --scale: `workbench dashboard --pool-size` values, alternated (default 1 0)")
    ap.add_argument("--before", default="main", help="git revision of the code measured as 'before' (default main)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds the board shows before the click")
    ap.add_argument("--limit", type=float, default=60.0, help="seconds to wait for the charts before giving up")
    args = ap.parse_args(argv)
    if args.scale:
        return scale_main(args)
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
            with serving(code, ws, root / f"{name}.log") as (url, _pid):
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
