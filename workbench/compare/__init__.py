"""Comparing two runs (``workbench compare A B``): what a release manager reads before approving production.

The commits between them per repository (through upstream pipelines'
provenance), the config each run was created with (recorded per run, secrets by
name only), stages and jobs side by side, and the artifacts and packages whose
SHA-256 differs. :func:`as_frame` turns the result into one DataFrame for a
notebook. Registered by :mod:`workbench.features` (the ``compare-1`` migration
and the run recorder).
"""
from __future__ import annotations

from typing import Any

from ..hooks import register_run_recorder
from .snapshot import pipeline_snapshot, recorder, run_configs

register_run_recorder(recorder)

__all__ = ["as_frame", "pipeline_snapshot", "run_configs"]


def as_frame(result: dict[str, Any]) -> Any:
    """A comparison (``Local.compare`` / ``Client.compare``) as one long DataFrame: section, item, a, b, change."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for m in result["materials"]:
        rows.append({"section": "material", "item": m["material"], "a": m["a"], "b": m["b"],
                     "change": "same" if m["a"] == m["b"] else f"{len(m['commits'])} commits"})
        for c in m["commits"]:
            rows.append({"section": "commit", "item": m["material"], "a": None, "b": c["sha"],
                         "change": f"{c['author']}: {c['message']}"})
        for c in m["removed"]:
            rows.append({"section": "commit", "item": m["material"], "a": c["sha"], "b": None,
                         "change": f"only in A: {c['author']}: {c['message']}"})
    for u in result["upstream"]:
        rows.append({"section": "upstream", "item": u["pipeline"], "a": u["a"], "b": u["b"], "change": u["change"]})
    for c in result["config"]:
        rows.append({"section": "config", "item": c["key"], "a": c["a"], "b": c["b"], "change": c["change"]})
    for s in result["stages"]:
        rows.append({"section": "stage", "item": s["stage"], "a": s["a_status"], "b": s["b_status"],
                     "change": _secs(s["delta_s"]), "a_duration_s": s["a_duration_s"],
                     "b_duration_s": s["b_duration_s"]})
    for j in result["jobs"]:
        rows.append({"section": "job", "item": f"{j['stage']}/{j['job']}", "a": j["a_status"], "b": j["b_status"],
                     "change": _secs(j["delta_s"]), "a_duration_s": j["a_duration_s"],
                     "b_duration_s": j["b_duration_s"]})
    for x in result["artifacts"]["changed"]:
        rows.append({"section": "artifact", "item": f"{x['stage']}/{x['job']}/{x['path']}", "a": x["a_sha256"],
                     "b": x["b_sha256"], "change": x["change"]})
    for p in result["packages"]["changed"]:
        rows.append({"section": "package", "item": f"{p['repository']}/{p['name']} ({p['action']})",
                     "a": p.get("a_version"), "b": p.get("b_version"), "change": p["change"]})
    cols = ["section", "item", "a", "b", "change", "a_duration_s", "b_duration_s"]
    return pd.DataFrame(rows, columns=cols)


def _secs(d: float | None) -> str:
    return "" if d is None else f"{d:+.2f}s"


def as_html(result: dict[str, Any]) -> str:
    """A comparison as the dashboard's Run tab shows it: what changed first, every value escaped."""
    from html import escape as e

    a, b = result["a"], result["b"]
    parts = [f"<div class='wb-compare'><b>{e(a['locator'])}</b> ({e(a['label'])}, {e(a['status'])}) → "
             f"<b>{e(b['locator'])}</b> ({e(b['label'])}, {e(b['status'])})"]

    def table(title: str, head: list[str], rows: list[list[Any]]) -> None:
        if not rows:
            return
        th = "".join(f"<th>{e(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{e('' if c is None else str(c))}</td>" for c in r) + "</tr>"
                       for r in rows)
        parts.append(f"<h4>{e(title)}</h4><table class='wb-compare-{title.split()[0].lower()}' "
                     f"style='font-size:13px'><tr>{th}</tr>{body}</table>")

    table("Commits in B not in A", ["material", "sha", "author", "message"],
          [[m["material"], c["sha"][:12], c["author"], c["message"]] for m in result["materials"] for c in m["commits"]]
          + [[m["material"], c["sha"][:12], c["author"], "only in A: " + c["message"]]
             for m in result["materials"] for c in m["removed"]])
    table("Upstream runs", ["pipeline", "A", "B"], [[u["pipeline"], u["a"], u["b"]] for u in result["upstream"]
                                                    if u["change"] != "same"])
    table("Config changed", ["key", "A", "B"], [[c["key"], c["a"], c["b"]] for c in result["config"]])
    table("Stages and jobs", ["stage / job", "A", "B", "A time (s)", "B time (s)"],
          [[s["stage"], s["a_status"], s["b_status"], s["a_duration_s"], s["b_duration_s"]] for s in result["stages"]]
          + [[f"{j['stage']}/{j['job']}", j["a_status"], j["b_status"], j["a_duration_s"], j["b_duration_s"]]
             for j in result["jobs"]])
    table("Artifacts that differ", ["path", "A sha256", "B sha256"],
          [[f"{x['stage']}/{x['job']}/{x['path']}", (x["a_sha256"] or "")[:16], (x["b_sha256"] or "")[:16]]
           for x in result["artifacts"]["changed"]])
    table("Packages that differ", ["package", "A", "B"],
          [[f"{p['repository']}/{p['name']}", p.get("a_version"), p.get("b_version")]
           for p in result["packages"]["changed"]])
    parts += [f"<p><i>{e(n)}</i></p>" for n in result["notes"]]
    if not any(m["commits"] or m["removed"] for m in result["materials"]) and not result["config"]:
        parts.append("<p>no commits and no config between them</p>")
    return "".join(parts) + "</div>"
