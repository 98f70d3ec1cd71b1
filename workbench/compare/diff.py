"""Comparing two runs' recorded facts: pure functions over plain dicts, no store, no git.

:func:`workbench.compare.gather.facts` reads one run's facts; :func:`compare`
puts two side by side: what changed in config, stages and jobs (status,
duration), artifacts and packages (by SHA-256). The commits between the runs
need the materials' repositories and are added by the gathering edge.
"""
from __future__ import annotations

from typing import Any, Mapping


def _change(a: Any, b: Any) -> str:
    if a is None:
        return "added"
    if b is None:
        return "removed"
    return "same" if a == b else "changed"


def config_changes(a: Mapping[str, str] | None, b: Mapping[str, str] | None) -> list[dict[str, Any]]:
    """Every config path whose value differs (added, removed or changed), sorted by path."""
    if a is None or b is None:
        return []
    return [{"key": k, "a": a.get(k), "b": b.get(k), "change": _change(a.get(k), b.get(k))}
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(b - a, 3)


def side_by_side(a: list[dict[str, Any]], b: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Rows of ``a`` and ``b`` matched on ``keys``: status and duration of each, and the duration's change."""
    def key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(r[k] for k in keys)

    left, right = {key(r): r for r in a}, {key(r): r for r in b}
    order = list(left) + [k for k in right if k not in left]
    out = []
    for k in order:
        ra, rb = left.get(k, {}), right.get(k, {})
        out.append({**dict(zip(keys, k)), "a_status": ra.get("status"), "b_status": rb.get("status"),
                    "a_duration_s": ra.get("duration_s"), "b_duration_s": rb.get("duration_s"),
                    "delta_s": _delta(ra.get("duration_s"), rb.get("duration_s"))})
    return out


def by_checksum(a: list[dict[str, Any]], b: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any]:
    """Files (artifacts, packages) matched on ``keys``; those whose SHA-256 differs or that only one run has."""
    def key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(r[k] for k in keys)

    left, right = {key(r): r for r in a}, {key(r): r for r in b}
    changed, same = [], 0
    for k in sorted(set(left) | set(right), key=lambda t: tuple(str(x) for x in t)):
        sa, sb = (left.get(k) or {}).get("sha256"), (right.get(k) or {}).get("sha256")
        c = _change(sa, sb)
        if c == "same":
            same += 1
            continue
        row = {**dict(zip(keys, k)), "a_sha256": sa, "b_sha256": sb, "change": c}
        if any("version" in r for r in (left.get(k), right.get(k)) if r):
            row.update(a_version=(left.get(k) or {}).get("version"), b_version=(right.get(k) or {}).get("version"))
        changed.append(row)
    return {"changed": changed, "unchanged": same}


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two runs' facts (from ``gather.facts``) → what differs, as JSON-ready data."""
    notes = []
    for side, f in (("a", a), ("b", b)):
        if f.get("config") is None:
            notes.append(f"{f['run']['locator']} was created before runs recorded their config: "
                         "its config cannot be compared")
    return {
        "a": a["run"], "b": b["run"],
        "config": config_changes(a.get("config"), b.get("config")),
        "config_same": a.get("config_digest") is not None and a.get("config_digest") == b.get("config_digest"),
        "stages": side_by_side(a["stages"], b["stages"], ("stage",)),
        "jobs": side_by_side(a["jobs"], b["jobs"], ("stage", "job")),
        "artifacts": by_checksum(a["artifacts"], b["artifacts"], ("stage", "job", "path")),
        "packages": by_checksum(a["packages"], b["packages"], ("action", "repository", "name")),
        "notes": notes,
    }
