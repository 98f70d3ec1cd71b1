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
