"""Deciding revisions: poll git materials, read upstream runs, apply fan-in and filters.

One :class:`MaterialSource` serves one scheduling pass (or one manual
trigger): it polls each repository URL once however many pipelines use it,
remembers the heads and errors it saw, and turns a pipeline's materials into
:class:`~workbench.materials.plans.TriggerPlan` s: none (nothing changed, or
waiting), one (GoCD's batching), or one per commit (``trigger: each_commit``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..config.model import DependencyMaterial, GitMaterial, Pipeline
from ..errors import MaterialError, UsageError
from . import fanin, filters
from .dependency import UpstreamRun, passed_runs, passed_runs_many
from .git import CommitInfo, Mirror, auth_url, normalize_url
from .plans import MaterialRev, TriggerPlan

__all__ = ["Decision", "MaterialSource"]

HISTORY_DEPTH = 20  # how far back fan-in looks for a matching revision


@dataclass(frozen=True)
class Decision:
    """What the pass should do for one pipeline: plans to trigger, or why it waits."""

    plans: tuple[TriggerPlan, ...] = ()
    waiting: str | None = None


def _prev(last: Any, name: str) -> Mapping[str, Any] | None:
    revs = getattr(last, "revisions", None) or {}
    p = revs.get(name)
    if p is None:
        return None
    return p if isinstance(p, Mapping) else {"revision": str(p)}


class MaterialSource:
    """Material state for one pass over a workspace."""

    def __init__(self, ws: Any, *, parallel: int = 8) -> None:
        self.ws = ws
        self.store = ws.store
        self.mirrors_dir: Path = ws.state / "mirrors"
        self.parallel = parallel
        self.heads: dict[str, str | MaterialError] = {}  # fingerprint -> head or error
        self.failed_urls: dict[str, MaterialError] = {}
        self._mirrors: dict[str, Mirror] = {}
        self._deps: dict[tuple[str, str], list[UpstreamRun]] = {}
        self._asked: set[int] = set()  # the material objects polled for themselves this pass
        self._polled: set[str] = set()  # the fingerprints asked of their remote this pass (once each)
        self._commits: dict[tuple[str, str | None, str], list[CommitInfo]] = {}
        self._urls: dict[str, str] = {}  # a material's url as written -> normalised (this pass)

    # -- git -------------------------------------------------------------------
    def fingerprint(self, m: GitMaterial) -> str:
        return f"git:{self.url(m)}#{m.branch}"  # = git.fingerprint(m.url, m.branch, root), memoised by url()

    def url(self, m: GitMaterial) -> str:
        """The material's normalised URL, once per spelling and pass (a local path costs a realpath)."""
        return self._normal(m.url)

    def _normal(self, raw: str) -> str:
        found = self._urls.get(raw)
        if found is None:
            found = self._urls[raw] = normalize_url(raw, self.ws.root)
        return found

    def mirror(self, m: GitMaterial) -> Mirror:
        url = self.url(m)
        if url not in self._mirrors:
            password = m.password
            if m.encrypted_password:
                from ..secrets import decrypt_variables

                password = decrypt_variables({"p": m.encrypted_password}, self.ws)["p"]
            remote = auth_url(m.url if "://" in m.url else url, m.username, password)
            self._mirrors[url] = Mirror(self.mirrors_dir, url, remote_url=remote, secret=password)
        return self._mirrors[url]

    def poll(self, materials: Iterable[GitMaterial]) -> None:
        """Ask each repository once per pass for its heads; fetch the ones that moved. A material whose
        repository and branch this source already asked (the tick's quiet pass, then its full pass) is not
        asked again: one look-up per repository and pass."""
        by_url: dict[str, list[GitMaterial]] = {}
        for m in materials:
            self._asked.add(id(m))
            fp = self.fingerprint(m)
            if fp not in self._polled:
                self._polled.add(fp)
                by_url.setdefault(self.url(m), []).append(m)
        if not by_url:
            return

        def one(url: str) -> None:
            ms = by_url[url]
            try:
                heads = self.mirror(ms[0]).poll({m.branch for m in ms})
            except MaterialError as exc:
                self.failed_urls[url] = exc
                for m in ms:
                    self.heads[self.fingerprint(m)] = exc
                return
            for m in ms:
                self.heads[self.fingerprint(m)] = heads[m.branch]

        if len(by_url) == 1 or self.parallel <= 1:
            for url in by_url:
                one(url)
        else:
            with ThreadPoolExecutor(max_workers=min(self.parallel, len(by_url)), thread_name_prefix="wb-poll") as pool:
                list(pool.map(one, by_url))

    def head(self, m: GitMaterial) -> str:
        """The material's head: as polled this pass, else as the mirror last saw it (auto_update: false)."""
        fp = self.fingerprint(m)
        if fp not in self.heads:
            known = self.mirror(m).local_head(m.branch)
            if known is None:  # never fetched: poll it once, whatever auto_update says
                self.poll([m])
            else:
                self.heads[fp] = known
        value = self.heads[fp]
        if isinstance(value, MaterialError):
            raise value
        return value

    def commits(self, m: GitMaterial, previous: str | None, sha: str) -> list[CommitInfo]:
        """Commits in ``previous..sha`` with their files: one ``git log`` per range and pass."""
        key = (self.url(m), previous, sha)
        if key not in self._commits:
            try:
                self._commits[key] = self.mirror(m).commits(previous, sha, limit=1000)
            except MaterialError:
                if previous is None:
                    raise
                self._commits[key] = self.mirror(m).commits(None, sha)  # the old revision is gone (force push)
        return self._commits[key]

    def _git_rev(self, m: GitMaterial, sha: str, previous: str | None, changed: bool) -> MaterialRev:
        commits = () if previous == sha else tuple(self.commits(m, previous, sha)[:500])
        return MaterialRev(m.name, "git", self.fingerprint(m), sha, previous, changed, self.url(m), m.branch,
                           commits=commits)

    def _git_previous(self, m: GitMaterial, last: Any) -> str | None:
        p = _prev(last, m.name)
        if p is None or p.get("kind", "git") != "git":
            return None
        if p.get("url") and self._normal(str(p["url"])) != self.url(m):
            return None  # the material now points elsewhere: its old revision means nothing
        if p.get("branch") and p["branch"] != m.branch:
            return None
        return str(p.get("revision") or "") or None

    # -- dependencies ----------------------------------------------------------
    def upstream_runs(self, m: DependencyMaterial) -> list[UpstreamRun]:
        key = (m.pipeline, m.stage)
        if key not in self._deps:
            self._deps[key] = passed_runs(self.store, m.pipeline, m.stage, limit=HISTORY_DEPTH)
        return self._deps[key]

    def prefetch_upstreams(self, pipelines: Iterable[Pipeline]) -> None:
        """Read the upstream runs of every dependency material of ``pipelines`` at once.

        Called by a scheduling pass before it decides its pipelines in
        threads: one read for the whole pass instead of two per material and
        pipeline (the cost that made a chain of N pipelines O(N²), profile in
        benchmarks/README.md). The deciding threads then only read this cache.
        """
        keys = {(m.pipeline, m.stage) for p in pipelines for m in p.materials
                if isinstance(m, DependencyMaterial)} - set(self._deps)
        if keys:
            self._deps.update(passed_runs_many(self.store, keys, limit=HISTORY_DEPTH))

    # -- automatic triggering --------------------------------------------------
    def decide(self, p: Pipeline, last: Any) -> Decision:
        """Plans for ``p`` given its latest run ``last`` (None: never ran)."""
        cands: dict[str, list[fanin.Candidate]] = {}
        for m in p.materials:
            if isinstance(m, GitMaterial):
                try:
                    # auto_update: false moves only when polled for it (notify, timer, manual), even if
                    # another pipeline's poll of the same URL already fetched the new head
                    kept = None if m.auto_update or id(m) in self._asked else self._git_previous(m, last)
                    head = kept or self.head(m)
                except MaterialError as exc:
                    return Decision(waiting=f"material {m.name}: {exc}")
                cands[m.name] = [fanin.Candidate(head, {self.fingerprint(m): head})]
            elif isinstance(m, DependencyMaterial):
                runs = self.upstream_runs(m)
                if not runs:
                    return Decision(waiting=f"waiting for {m.pipeline} stage {m.stage} to pass")
                cands[m.name] = [fanin.Candidate(r.locator, r.ancestors, r) for r in runs]
        if not cands:
            return Decision()
        upstream_keys = {k for m in p.materials if isinstance(m, DependencyMaterial)
                         for c in cands[m.name] for k in c.ancestors}
        chosen, note = self._choose(p, cands)
        if chosen is None:
            return Decision(waiting=note)
        return self._plans(p, last, chosen, note, upstream_keys)

    def _choose(self, p: Pipeline, cands: dict[str, list[fanin.Candidate]]
                ) -> tuple[dict[str, fanin.Candidate] | None, str | None]:
        newest = {n: c[0] for n, c in cands.items()}
        if not p.fan_in or len(cands) < 2:
            return newest, None
        shared = fanin.shared_keys(cands)
        if not shared:
            return newest, None
        for m in p.materials:  # a git material shared with an upstream may have to go back in its history
            if isinstance(m, GitMaterial) and self.fingerprint(m) in shared:
                fp = self.fingerprint(m)
                history = self.mirror(m).first_parent_history(newest[m.name].revision, HISTORY_DEPTH)
                cands[m.name] = [fanin.Candidate(sha, {fp: sha}) for sha in history]
        result = fanin.resolve(cands)
        if not result.ok:
            why = "; ".join(result.conflicts)
            return None, f"fan-in: waiting for upstreams built from the same revisions ({why})"
        chosen = dict(result.chosen or {})
        note = None
        if any(chosen[n].revision != newest[n].revision for n in chosen):
            note = "fan-in: " + "; ".join(fanin.describe_conflicts(newest, shared))
        return chosen, note

    def _plans(self, p: Pipeline, last: Any, chosen: Mapping[str, fanin.Candidate], note: str | None,
               upstream_keys: set[str]) -> Decision:
        revs: dict[str, tuple[str | None, bool]] = {}  # name -> (previous, advanced)
        each: list[GitMaterial] = []
        for m in p.materials:
            c = chosen[m.name]
            if isinstance(m, GitMaterial):
                prev = self._git_previous(m, last)
                adv, back = self._git_moved(m, prev, c.revision)
                if back:
                    return Decision(waiting=note or f"material {m.name} went back to an older revision")
                revs[m.name] = (prev, adv)
                shared = p.fan_in and self.fingerprint(m) in upstream_keys  # fan-in decides its revision
                if adv and prev and p.trigger == "each_commit" and not shared:
                    each.append(m)
            else:
                assert isinstance(m, DependencyMaterial)
                u: UpstreamRun = c.data
                pm = _prev(last, m.name)
                prev_order = None
                if pm and pm.get("kind") == "dependency":
                    prev_order = (int(pm.get("counter", 0)), int(pm.get("stage_counter", 0)))
                if prev_order is not None and u.order < prev_order:
                    return Decision(waiting=note or f"upstream {m.pipeline} went back to an older run")
                adv = prev_order is None or u.order > prev_order
                revs[m.name] = (pm.get("revision") if pm else None, adv and not m.ignore_for_scheduling)
        if last is not None and not any(adv for _, adv in revs.values()):
            return Decision(waiting=note)
        sets = [dict((n, c.revision) for n, c in chosen.items())]
        if each:
            sets = self._each_commit_sets(p, chosen, revs, each) or sets
        plans = []
        previous = {n: prev for n, (prev, _) in revs.items()}
        for revset in sets:
            mats = []
            for m in p.materials:
                c = chosen[m.name]
                prev = previous.get(m.name)
                if isinstance(m, GitMaterial):
                    sha = revset[m.name]
                    changed = prev != sha and (revs[m.name][1] or prev is None)
                    mats.append(self._git_rev(m, sha, prev, changed))
                else:
                    u = c.data
                    mats.append(MaterialRev(m.name, "dependency", f"pipeline:{m.pipeline}/{m.stage}", u.locator, prev,
                                            revs[m.name][1] and prev != u.locator, upstream=u))
            previous = {mr.name: mr.revision for mr in mats}
            plans.append(_plan(p.name, tuple(mats)))
        return Decision(tuple(plans), note)

    def _git_moved(self, m: GitMaterial, prev: str | None, sha: str) -> tuple[bool, bool]:
        """(advanced, went back) for a git material; filters decide whether a move counts.

        As in GoCD, filters look at each commit (modification) in the range:
        one commit touching a file that counts is enough. No commit in
        ``prev..sha`` means the branch went back to an ancestor.
        """
        if prev is None:
            return True, False
        if prev == sha:
            return False, False
        commits = self.commits(m, prev, sha)
        if not commits:
            return False, True
        if m.includes or m.ignore:
            return any(filters.triggers(c.files, m.includes, m.ignore) for c in commits), False
        return True, False

    def _each_commit_sets(self, p: Pipeline, chosen: Mapping[str, fanin.Candidate],
                          revs: Mapping[str, tuple[str | None, bool]], each: Sequence[GitMaterial]
                          ) -> list[dict[str, str]]:
        """``trigger: each_commit``: one revision set per commit that counts, oldest first."""
        state = {n: c.revision for n, c in chosen.items()}
        for m in each:
            state[m.name] = revs[m.name][0] or state[m.name]
        sets: list[dict[str, str]] = []
        for m in each:
            prev = revs[m.name][0]
            commits = list(reversed(self.commits(m, prev, chosen[m.name].revision)))
            for c in commits:
                if filters.triggers(c.files, m.includes, m.ignore) or (not c.files and not (m.includes or m.ignore)):
                    state[m.name] = c.sha
                    sets.append(dict(state))
        return sets

    # -- manual triggering -----------------------------------------------------
    def plan_manual(self, p: Pipeline, last: Any, requested: Mapping[str, str] | None = None) -> TriggerPlan:
        """Every material at its latest revision, or at the one asked for."""
        requested = dict(requested or {})
        names = {m.name for m in p.materials}
        unknown = sorted(set(requested) - names)
        if unknown:
            known = ", ".join(sorted(names)) or "none"
            raise UsageError(f"pipeline {p.name} has no material {', '.join(unknown)} (materials: {known})")
        gits = [m for m in p.materials if isinstance(m, GitMaterial)]
        self.poll(gits)
        mats: list[MaterialRev] = []
        notes: list[str] = []
        for m in p.materials:
            if isinstance(m, GitMaterial):
                head = self.head(m)
                sha = self.mirror(m).resolve(requested[m.name]) if m.name in requested else head
                prev = self._git_previous(m, last)
                mats.append(self._git_rev(m, sha, prev, prev != sha))
            elif isinstance(m, DependencyMaterial):
                u = self._requested_upstream(m, requested.get(m.name))
                if u is None:
                    notes.append(f"{m.pipeline} stage {m.stage} never passed: material {m.name} left out")
                    continue
                pm = _prev(last, m.name)
                prev = str(pm.get("revision")) if pm else None
                mats.append(MaterialRev(m.name, "dependency", f"pipeline:{m.pipeline}/{m.stage}", u.locator, prev,
                                        prev != u.locator, upstream=u))
        return TriggerPlan(p.name, tuple(mats), trigger="manual", reason="manual", notes=tuple(notes))

    def _requested_upstream(self, m: DependencyMaterial, wanted: str | None) -> UpstreamRun | None:
        if wanted is None:
            runs = self.upstream_runs(m)
            return runs[0] if runs else None
        parts = wanted.strip("/").split("/")
        if parts and not parts[0].isdigit():
            if parts[0] != m.pipeline:
                raise UsageError(f"material {m.name} follows {m.pipeline}, not {parts[0]}")
            parts = parts[1:]
        if not parts or not parts[0].isdigit():
            raise UsageError(f"material {m.name}: expected COUNTER or {m.pipeline}/COUNTER[/{m.stage}/STAGE_COUNTER]")
        runs = passed_runs(self.store, m.pipeline, m.stage, counter=int(parts[0]), limit=100)
        if len(parts) >= 3 and parts[2].isdigit():
            runs = [r for r in runs if r.stage_counter == int(parts[2])]
        if not runs:
            raise UsageError(f"{m.pipeline}/{parts[0]} has no passed {m.stage} stage to use for material {m.name}")
        return runs[0]


def _plan(pipeline: str, mats: tuple[MaterialRev, ...]) -> TriggerPlan:
    changed = [m for m in mats if m.changed]
    git_changed = [m for m in changed if m.kind == "git"]
    trigger = "material" if git_changed or not changed else "dependency"
    parts = []
    for m in changed:
        if m.kind == "git":
            head = m.commits[0] if m.commits else None
            what = f"{len(m.commits)} commit{'s' if len(m.commits) != 1 else ''}" if m.previous else "first run"
            if head is not None:
                what += f", {m.revision[:7]} {(head.message.splitlines() or [''])[0][:60]!r} by {head.author}"
            parts.append(f"{m.name}: {what}")
        else:
            parts.append(f"{m.name}: {m.revision} passed")
    return TriggerPlan(pipeline, mats, trigger=trigger, reason="; ".join(parts) or "first run")
