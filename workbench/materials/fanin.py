"""Fan-in resolution as GoCD does it, over plain data (no git, no store).

A pipeline with several materials whose histories share an ancestor (the same
git repository on the same branch, or the same upstream pipeline) must only
run with a set of material revisions that agree on that ancestor: in the
Shops diamond, qa_deploy takes search, api and ui runs that were all built
from the *same* config commit, and waits while they disagree. Each material
offers candidates newest first; each candidate carries its ancestry (key →
revision, e.g. ``git:/repos/config#master`` → sha, ``pipeline:api`` → 7). The
resolver picks the newest combination whose ancestries agree on every shared
key, searching depth first with pruning and a bounded number of steps so a
long history can never stall a scheduling pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class Candidate:
    """One revision a material could be used at."""

    revision: str
    ancestors: Mapping[str, str] = field(default_factory=dict)
    data: Any = None  # opaque to the resolver; handed back to the caller


@dataclass(frozen=True)
class FanIn:
    """The chosen candidate per material, or why none agree (``chosen`` is None)."""

    chosen: Mapping[str, Candidate] | None
    conflicts: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.chosen is not None


def shared_keys(materials: Mapping[str, Sequence[Candidate]]) -> set[str]:
    """Ancestor keys that appear under more than one material: the ones that must agree."""
    seen: dict[str, set[str]] = {}
    for name, cands in materials.items():
        for c in cands:
            for key in c.ancestors:
                seen.setdefault(key, set()).add(name)
    return {k for k, names in seen.items() if len(names) > 1}


def resolve(materials: Mapping[str, Sequence[Candidate]], *, max_steps: int = 20000) -> FanIn:
    """Pick one candidate per material so that shared ancestors agree.

    Materials are tried in name order and candidates newest first, so the
    result is the newest consistent set in that order. A material with no
    candidate makes resolution impossible (the caller waits).
    """
    names = sorted(materials)
    empty = [n for n in names if not materials[n]]
    if empty:
        return FanIn(None, tuple(f"{n} has no revision yet" for n in empty))
    keys = shared_keys(materials)
    if not keys:
        return FanIn({n: materials[n][0] for n in names})
    steps = 0
    chosen: dict[str, Candidate] = {}

    def agree(merged: dict[str, str], cand: Candidate) -> bool:
        return all(merged.get(k, v) == v for k, v in cand.ancestors.items() if k in keys)

    def search(i: int, merged: dict[str, str]) -> bool:
        nonlocal steps
        if i == len(names):
            return True
        for cand in materials[names[i]]:
            steps += 1
            if steps > max_steps:
                return False
            if not agree(merged, cand):
                continue
            chosen[names[i]] = cand
            added = {k: v for k, v in cand.ancestors.items() if k in keys and k not in merged}
            merged.update(added)
            if search(i + 1, merged):
                return True
            for k in added:
                del merged[k]
        return False

    if search(0, {}):
        return FanIn(dict(chosen))
    return FanIn(None, describe_conflicts({n: materials[n][0] for n in names}, keys))


def describe_conflicts(latest: Mapping[str, Candidate], keys: set[str] | None = None) -> tuple[str, ...]:
    """Human words for why the newest revisions disagree: ``config: search has abc1234, api has def5678``."""
    keys = keys if keys is not None else shared_keys({n: [c] for n, c in latest.items()})
    out = []
    for key in sorted(keys):
        values = {n: c.ancestors[key] for n, c in latest.items() if key in c.ancestors}
        if len(set(values.values())) > 1:
            parts = ", ".join(f"{n} has {_short(v)}" for n, v in sorted(values.items()))
            out.append(f"{_key_name(key)}: {parts}")
    return tuple(out) or ("no combination of recent upstream runs agrees on their shared ancestors",)


def _short(value: str) -> str:
    return value[:7] if len(value) == 40 and all(c in "0123456789abcdef" for c in value) else value


def _key_name(key: str) -> str:
    kind, _, rest = key.partition(":")
    if kind == "git":
        url, _, branch = rest.rpartition("#")
        return f"{url.rstrip('/').rsplit('/', 1)[-1]}@{branch}"
    return rest or key


__all__ = ["Candidate", "FanIn", "resolve", "shared_keys", "describe_conflicts"]
