"""``make bench``: every workload of issue 9, side by side with its baselines and peers, in one run.

    .venv/bin/python benchmarks/run_all.py [--only a,b,c,d,e,f,engine,s] [--repeat 3] [--quick]
                                           [--no-peers] [--update-readme]

Workloads: (a) the Shops example's shape with ``true`` and ``sleep 0.01``
tasks; (b) a wide stage of 50/100/200 jobs; (c) a chain of 10/25/50
pipelines linked by dependency materials; (d) 8 and 32 trivial notebook
jobs; (e) metrics over 10k/100k/1M job runs; (f) ``tick`` over 10/50/200
unchanged pipelines; (g) issue 17's 1,000 generated pipelines
(bench_scale.py: validate, no-change tick, status, notify); and issue 1's engine benchmark (bench_engine.py), run
as it is; (s) issue 14's release service (bench_server.py: webhook → job, reads
under 50 clients at 1,000 pipelines, approve round trip; 200 pipelines with --quick). Peers (Prefect, Ploomber) are installed into benchmarks/.venvs/ the
first time. Every row prints ours, the baselines with ours/baseline, the peers
with how much slower they are, and the targets met or missed. The JSON of the
run goes to benchmarks/results/latest.json; ``--update-readme`` rewrites the
figures table of benchmarks/README.md from it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import RESULTS, Report, Row, fmt_s, med, nproc, run_json, target  # noqa: E402
from workloads import dag as D  # noqa: E402

ALL = ("a", "b", "engine", "c", "d", "e", "f", "g", "s")
TABLE_START, TABLE_END = "<!-- figures:start -->", "<!-- figures:end -->"


def growth(sizes: list[float], times: list[float]) -> float:
    """The exponent k of time ~ size^k between the smallest and the largest size (1.0 = linear)."""
    return math.log(times[-1] / times[0]) / math.log(sizes[-1] / sizes[0])


def growth_target(label: str, sizes: list[float], times: list[float], *, required: bool = True) -> str:
    k = growth(sizes, times)
    if not required:  # the issue asks linear growth of (c), (e) and (f) only
        return f"{label} growth exponent {k:.2f} (1.0 = linear; informational)"
    return f"{label} growth exponent {k:.2f} (1.0 = linear; target: linear or better): {'met' if k <= 1.15 else 'MISSED'}"


def ahead(peer: str, peer_s: float, ours: float) -> str:
    if peer_s != peer_s:
        return f"ahead of {peer}: n/a"
    return f"ahead of {peer}: {'met' if ours < peer_s else 'MISSED'} ({peer_s / ours:.1f}x)"


# -- the Prefect peer: one process for every shell workload (its server starts once) -------------


def prefect_results(plans: list[dict[str, Any]], peer: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="wb-bench-prefect-") as tmp:
        spec = Path(tmp) / "plans.json"
        spec.write_text(json.dumps({"workers": nproc(), "workloads": plans}))
        env = peer.env(PREFECT_HOME=str(Path(tmp) / "home"), PREFECT_LOGGING_LEVEL="ERROR")
        return run_json([str(peer.python), str(HERE / "workloads" / "prefect_runner.py"), str(spec)], env=env,
                        cwd=Path(tmp), timeout=1800)


# -- workloads ------------------------------------------------------------------------------------


def shell_workloads(report: Report, only: set[str], repeat: int, quick: bool, peers: dict[str, Any]) -> None:
    from workloads import shell

    shops = {"true": D.shops(D.TRUE), "sleep 0.01": D.shops(D.SLEEP)}
    wide_sizes = [50, 200] if quick else [50, 100, 200]
    chain_sizes = [10, 25] if quick else [10, 25, 50]
    # Prefect is 2 to 30 times slower than the rest: one timed run per shape (its server is warm by then),
    # and the chain only up to 25 pipelines (50 would take over a minute of the 10-minute budget)
    plans = []
    if "a" in only:
        plans += [{"name": f"a:{k}", "plan": d.plan(), "repeat": 1, "warm": True} for k, d in shops.items()]
    if "b" in only:
        plans += [{"name": f"b:{n}", "plan": D.wide(n).plan(), "repeat": 1} for n in wide_sizes]
    if "c" in only:
        plans += [{"name": f"c:{n}", "plan": D.chain(n).plan(), "repeat": 1, "mode": "subflows"}
                  for n in chain_sizes if n <= 25]
    pf: dict[str, Any] = {}
    if plans and isinstance(peers.get("prefect"), object) and hasattr(peers.get("prefect"), "python"):
        t = time.perf_counter()
        try:
            pf = prefect_results(plans, peers["prefect"])
            report.note(f"Prefect {peers['prefect'].version}: its ephemeral API server took {pf['_startup']:.1f} s to "
                        f"start (untimed); the Prefect runs took {time.perf_counter() - t:.0f} s in all")
        except RuntimeError as exc:
            report.note(f"Prefect failed: {exc}")

    def prefect(name: str) -> dict[str, float]:
        return {"prefect": med(pf[name])} if name in pf else {}

    if "a" in only:
        for k, d in shops.items():
            r = shell.ours(d, repeat)
            steps, gaps = r["steps"], r["stage_gaps"]
            p = prefect(f"a:{k}")
            tg = [target("stage-to-stage step (median)", med(gaps) * 1000, 20),
                  target("upstream-to-downstream step (median)", med(steps) * 1000, 20)]
            tg += [ahead("prefect", p["prefect"], r["wall"])] if p else []
            extra = {"stage step med/max": f"{med(gaps) * 1000:.1f}/{max(gaps) * 1000:.1f} ms",
                     "upstream step med/max": f"{med(steps) * 1000:.1f}/{max(steps) * 1000:.1f} ms",
                     # informational (README: the slot wait also holds the other jobs' own start cost, so the
                     # remainder is a lower bound of the engine's part, not a figure to judge the target on)
                     "of which every slot held by another job, stage/upstream (med)":
                         _ms2(r["stage_gaps_wait"], r["steps_wait"]),
                     "step less that wait, stage/upstream (med)": _ms2(r["stage_gaps_engine"], r["steps_engine"])}
            if shell.has_make():  # make -j's own steps under the same slots, from a timestamped Makefile
                m = shell.make_latencies(d, repeat)
                extra[f"make -j{nproc()} steps, stage/upstream (med)"] = _ms2(m["stage_gaps"], m["steps"])
                extra[f"make -j{nproc()}: every slot held by another job (med)"] = _ms2(m["stage_gaps_wait"],
                                                                                       m["steps_wait"])
            report.add(Row("(a) Shops shape: 8 pipelines, 32 jobs, fan-in, 2 at a time", f"{k}", r["wall"],
                           {"make -j": shell.make(d, repeat), "subprocess.run sequential": shell.subprocess_sequential(d, repeat)},
                           p, extra, tg))

    if "b" in only:
        walls = []
        for n in wide_sizes:
            d = D.wide(n)
            r = shell.ours(d, repeat)
            par = shell.subprocess_parallel(d, repeat)
            over = (r["wall"] - par) / n * 1000
            p = prefect(f"b:{n}")
            walls.append(r["wall"])
            tg = [target("per-job overhead over subprocess.run", over, 5)]
            tg += [ahead("prefect", p["prefect"], r["wall"])] if p else []
            report.add(Row("(b) wide stage of `true` jobs, 2 at a time", f"{n} jobs", r["wall"],
                           {f"subprocess.run x{nproc()} threads": par, "make -j": shell.make(d, repeat)}, p,
                           {"per job": f"{r['wall'] / n * 1000:.2f} ms", "overhead/job": f"{over:.2f} ms"}, tg))
        report.add_target(growth_target("wide stage", wide_sizes, walls, required=False))

    if "c" in only:
        walls = []
        for n in chain_sizes:
            d = D.chain(n)
            r = shell.ours(d, max(1, repeat - 1))
            steps = r["steps"]
            p = prefect(f"c:{n}")
            walls.append(r["wall"])
            tg = [target("upstream-to-downstream step (median)", med(steps) * 1000, 20)]
            tg += [ahead("prefect", p["prefect"], r["wall"])] if p else []
            report.add(Row("(c) chain of pipelines linked by dependency materials: trigger to finish", f"{n} pipelines",
                           r["wall"], {"make -j": shell.make(d, repeat),
                                       "subprocess.run sequential": shell.subprocess_sequential(d, repeat)}, p,
                           {"per pipeline": f"{r['wall'] / n * 1000:.1f} ms",
                            "step med/max": f"{med(steps) * 1000:.1f}/{max(steps) * 1000:.1f} ms"}, tg))
        report.add_target(growth_target("chain", chain_sizes, walls))


def _ms2(a: list[float], b: list[float]) -> str:
    return f"{med(a) * 1000:.1f}/{med(b) * 1000:.1f} ms"


def engine_workload(report: Report, repeat: int) -> None:
    """Issue 1's script as it is: its own baseline, per-job overhead, stage-to-stage latency, RSS."""
    p = subprocess.run([sys.executable, str(HERE / "bench_engine.py"), "--repeat", str(repeat)], capture_output=True,
                       text=True, timeout=600)
    if p.returncode != 0:
        report.note(f"bench_engine.py failed: {p.stderr.strip()[-500:]}")
        return
    text = p.stdout

    def ms(label: str) -> list[float]:
        m = re.search(re.escape(label) + r"[^:]*:\s*([\d.]+)(?:\s*/\s*([\d.]+))?", text)
        return [float(x) for x in m.groups() if x] if m else [float("nan")]

    par, wall = ms("baseline subprocess.run")[0], ms("workbench engine")[0]
    par_line = [ln for ln in text.splitlines() if "threads" in ln]
    par = float(re.search(r":\s*([\d.]+) ms", par_line[0]).group(1)) if par_line else par
    over = ms("per-job overhead vs parallel base")[0]
    gap_med, gap_max = (ms("stage-to-stage latency") + [float("nan")])[:2]
    rss = ms("engine process peak RSS")[0]
    report.add(Row("(engine) bench_engine.py: 4 stages x 50 `true` jobs, fresh process", "200 jobs", wall / 1000,
                   {f"subprocess.run x{nproc()} threads": par / 1000}, {},
                   {"peak RSS": f"{rss:.0f} MB", "stage step med/max": f"{gap_med:.1f}/{gap_max:.1f} ms"},
                   [target("per-job overhead over subprocess.run", over, 5),
                    target("stage-to-stage step (median)", gap_med, 20)]))


def notebook_workload(report: Report, repeat: int, quick: bool, peers: dict[str, Any]) -> None:
    from workloads import notebooks

    sizes = [8] if quick else [8, 32]
    peer = peers.get("ploomber")
    if not hasattr(peer, "python"):
        report.note(f"no notebook-pipeline peer: {peer}")
        peer = None
    res = notebooks.measure(sizes, max(1, repeat - 1), cli_runs=4 if quick else 6, peer=peer)
    for n in sizes:
        ours = res["ours"][n]
        cli, inproc = res["cli"][n], res["inproc"][n]
        measured = res["cli_measured"][n]
        cli_name = "papermill CLI sequential" + ("" if measured == n else f" ({measured} runs measured, scaled to {n})")
        p = {"ploomber": res["ploomber"][n]} if n in res["ploomber"] else {}
        tg = [target("throughput vs sequential papermill CLI", cli / ours, 3, "x", lower_is_better=False),
              target("time vs in-process execute_notebook", ours / inproc, 1.2, "x")]
        tg += [ahead("ploomber", p["ploomber"], ours)] if p else []
        report.add(Row("(d) stage of trivial notebook jobs, long-lived process, 2 at a time", f"{n} notebooks", ours,
                       {cli_name: cli, "papermill.execute_notebook sequential": inproc}, p,
                       {"per notebook": f"{ours / n * 1000:.0f} ms"}, tg))


def metrics_workload(report: Report, repeat: int, quick: bool) -> None:
    from workloads import metrics

    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    res = metrics.measure(sizes, repeat)
    for n in sizes:
        r = res[n]
        tg = [target("(issue 6) 1M job runs", r["ours"], 1.0, "s")] if n >= 1_000_000 else []
        report.add(Row("(e) every delivery metric over synthetic history (in memory)", f"{n:,} job runs", r["ours"],
                       {"per-row Python loop": r["naive"]}, {},
                       {"per 1k job runs": f"{r['ours'] / n * 1e6:.2f} ms", "pipeline runs": f"{r['runs']:,}"}, tg))
    report.add_target(growth_target("metrics", sizes, [res[n]["ours"] for n in sizes]))


def tick_workload(report: Report, repeat: int, quick: bool) -> None:
    from workloads import tick

    sizes = [10, 50] if quick else [10, 50, 200]
    res = tick.measure(sizes, repeat)
    for n in sizes:
        r = res[n]
        report.add(Row("(f) tick with no changes, one git repository per pipeline", f"{n} pipelines", r["ours"],
                       {"git ls-remote each, sequential": r["ls_remote"]}, {},
                       {"per pipeline": f"{r['ours'] / n * 1000:.1f} ms",
                        "`workbench tick` CLI (fresh process)": fmt_s(r["cli"])}))
    report.add_target(growth_target("tick", sizes, [res[n]["ours"] for n in sizes]))


def scale_workload(report: Report, repeat: int, quick: bool, size: int = 1000) -> None:
    """(g) issue 17 at its quick size (1,000 pipelines); ``bench_scale.py --size 10000`` runs the full one."""
    import bench_scale as B

    with tempfile.TemporaryDirectory(prefix="wb-bench-scale-") as tmp:
        f = B.measure([size], repeat, Path(tmp), notify=not quick)[size]
    w = f"(g) {size:,} generated pipelines (issue 17; full size: bench_scale.py --size 10000)"
    report.add(Row(w, "validate, parse cache warm", f["validate"],
                   {"PyYAML C parse of the files": f["validate_floor"]},
                   {}, {"cold (WORKBENCH_CONFIG_CACHE=0)": fmt_s(f["validate_cold"])},
                   [target("validate cold", f["validate_cold"], 2.0, "s"), target("validate cached", f["validate"], 0.3, "s")]))
    git = f["ls_remote_par"]
    report.add(Row(w, "no-change tick", f["tick"],
                   {"git ls-remote each repository, 8 at a time": git, "git ls-remote sequential": f["ls_remote_seq"],
                    "python importing the workbench": f["imports"]}, {},
                   {"repositories polled": f.get("polled", "n/a"), "remote look-ups": f.get("remote_lookups", "n/a"),
                    "git processes": f.get("git_processes", "n/a"),
                    "reliability invariants": "all hold" if not f["invariant_violations"] else "; ".join(f["invariant_violations"][:3])},
                   [target("tick - parallel git floor", f["tick"] - git, 1.0, "s")]))
    report.add(Row(w, "status (nothing changed: its kept answer)", f["status"],
                   {"pandas read of the runs table": f["status_floor"]}, {},
                   {"max RSS (computing)": f"{f.get('status_rss_mb', float('nan')):.0f} MB",
                    "the first after a write (computed)": f"{f['status_computed']:.2f} s"},
                   [target("status", f["status"], 0.3, "s"), target("status after a write", f["status_computed"], 0.3, "s"),
                    target("status RSS", f.get("status_rss_mb", 0), 300, "MB")]))
    if "notify" in f:
        report.add(Row(w, "notify -> first jobs the commit starts at once (serve running)", f["notify"],
                       {"the notify command": f["notify_cli"]}, {},
                       {"serve peak RSS": f"{f['serve_rss_mb']:.0f} MB",
                        "downstream first job after its upstreams passed (at most)": f"{f['dependent']:.2f} s",
                        "all 20 started (fan-in chains)": f"{f['chain']:.2f} s"},
                       [target("notify -> first jobs", f["notify"], 0.5, "s"),
                        target("dependency trigger", f["dependent"], 0.5, "s"),
                        target("serve RSS", f["serve_rss_mb"], 1024, "MB")]))


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(HERE.parent))
    except ValueError:
        return str(path)


# -- README -----------------------------------------------------------------------------------------


def readme_table(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lb, la = m.get("load_before", [0])[0], m.get("load_after", [0])[0]
    out = [f"Run of {m['date']} on {m['cpu']}, {m['nproc']} CPUs, {m['mem_gb']} GB, Python {m['python']}, "
           f"Linux {m['kernel']}; load average {lb:.1f} before, {la:.1f} after; {doc['seconds'] / 60:.1f} min in all.",
           "", "| workload | size | ours | baselines (ours/baseline) | peers (x slower than ours) | also | targets |",
           "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        bases = "<br>".join(f"{k}: {fmt_s(v)} ({r['ours'] / v:.2f}x)" if v == v and v else f"{k}: n/a"
                            for k, v in r["baselines"].items())
        peers = "<br>".join(f"{k}: {fmt_s(v)} ({v / r['ours']:.1f}x)" for k, v in r["peers"].items()) or "—"
        extra = "<br>".join(f"{k}: {v}" for k, v in r["extra"].items())
        tg = "<br>".join(t.replace("MISSED", "**MISSED**") for t in r["targets"]) or "—"
        out.append(f"| {r['workload']} | {r['size']} | {fmt_s(r['ours'])} | {bases} | {peers} | {extra} | {tg} |")
    if doc.get("notes"):
        out += [""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(out)


def update_readme(doc: dict[str, Any]) -> None:
    path = HERE / "README.md"
    text = path.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"{path} has no {TABLE_START} ... {TABLE_END} markers")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    path.write_text(f"{head}{TABLE_START}\n{readme_table(doc)}\n{TABLE_END}{tail}")
    print(f"updated {path}")


def server_workload(report: Report, repeat: int, quick: bool) -> None:
    """(s) issue 14's release service, bench_server.py as it is: webhook → job, reads under 50 clients, approve,
    a notebook job through the server. ``--quick``: 200 pipelines, fewer pushes, no notebook part."""
    import bench_server

    args = argparse.Namespace(pushes=5 if quick else 20, notifies=3 if quick else 10,
                              pipelines=200 if quick else 1000, clients=50, repeat=repeat)
    only = {"webhook", "reads"} if quick else set(bench_server.ALL)
    print("\n(s) the release service (bench_server.py)")
    bench_server.run(report, only, args)


# -- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(ALL), help="workloads to run (default: all)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats per figure (medians)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for trying the harness")
    ap.add_argument("--no-peers", action="store_true", help="skip Prefect and Ploomber")
    ap.add_argument("--update-readme", action="store_true", help="rewrite README.md's table from this run")
    ap.add_argument("--readme-only", action="store_true", help="rewrite README.md's table from results/latest.json")
    args = ap.parse_args(argv)
    if args.readme_only:
        update_readme(json.loads((RESULTS / "latest.json").read_text()))
        return 0
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = only - set(ALL)
    if unknown:
        ap.error(f"unknown workloads {', '.join(sorted(unknown))} (known: {', '.join(ALL)})")

    report = Report()
    m = report.machine
    print(f"Release Workbench benchmarks, {m['date']}: {m['cpu']}, {m['nproc']} CPUs, {m['mem_gb']} GB, "
          f"load average {m['load_before'][0]:.1f}; medians of {args.repeat}")

    peers: dict[str, Any] = {}
    if not args.no_peers and only & {"a", "b", "c", "d"}:
        from peers import Peer, ensure_all

        t = time.perf_counter()
        wanted = [n for n, ws in (("prefect", {"a", "b", "c"}), ("ploomber", {"d"})) if only & ws]
        peers = ensure_all(wanted)
        for n, p in peers.items():
            report.note(f"{n} {p.version} in {_rel(p.python.parent.parent)}" if isinstance(p, Peer) else f"{n} unavailable: {p}")
        print(f"  (peers ready in {time.perf_counter() - t:.0f} s)")

    if only & {"a", "b", "c"}:
        shell_workloads(report, only, args.repeat, args.quick, peers)
    if "engine" in only:
        engine_workload(report, args.repeat)
    if "d" in only:
        notebook_workload(report, args.repeat, args.quick, peers)
    if "e" in only:
        metrics_workload(report, args.repeat, args.quick)
    if "f" in only:
        tick_workload(report, args.repeat, args.quick)
    if "g" in only:
        scale_workload(report, args.repeat, args.quick)
    if "s" in only:
        server_workload(report, args.repeat, args.quick)

    path = report.save()
    doc = json.loads(path.read_text())
    missed = [(r.workload, r.size, t) for r in report.rows for t in r.targets if "MISSED" in t]
    print(f"\n{len(report.rows)} rows in {doc['seconds'] / 60:.1f} min; load average now {os.getloadavg()[0]:.1f}; "
          f"saved {path.relative_to(HERE.parent)}")
    print("targets missed:" if missed else "every target met")
    for w, s, t in missed:
        print(f"  {w} [{s}]: {t}")
    if args.update_readme:
        update_readme(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
