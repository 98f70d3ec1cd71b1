"""One shell workload, three spellings: workbench pipelines, a Makefile, and a plan for Prefect.

A :class:`Dag` is pipelines of stages of jobs (one command each) with
pipelines depending on other pipelines' last stage (GoCD's dependency
materials). Writing the same Dag as GoCD YAML, as a Makefile for ``make -j``
and as JSON for the Prefect runner is what makes the comparison fair: the
same commands, the same order constraints, the same concurrency.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

TRUE = ("true",)
SLEEP = ("sleep", "0.01")


@dataclass
class Dag:
    pipelines: dict[str, list[list[tuple[str, ...]]]] = field(default_factory=dict)  # name -> stages -> job argv
    upstream: dict[str, list[str]] = field(default_factory=dict)  # name -> pipelines it depends on

    @property
    def jobs(self) -> int:
        return sum(len(s) for stages in self.pipelines.values() for s in stages)

    @property
    def roots(self) -> list[str]:
        return [p for p in self.pipelines if not self.upstream.get(p)]

    def order(self) -> list[str]:
        """Pipelines upstream first."""
        done: list[str] = []
        while len(done) < len(self.pipelines):
            for p in self.pipelines:
                if p not in done and all(u in done for u in self.upstream.get(p, ())):
                    done.append(p)
        return done

    def commands(self) -> list[tuple[str, ...]]:
        """Every job's argv in an order that respects the dependencies (for the sequential baseline)."""
        return [job for p in self.order() for stage in self.pipelines[p] for job in stage]

    # -- spellings ----------------------------------------------------------------------------
    def yaml(self) -> str:
        """GoCD YAML (format 10) for the workbench: one stage per stage, one exec task per job."""
        lines = ["format_version: 10", "pipelines:"]
        for name, stages in self.pipelines.items():
            lines += [f"  {name}:", "    group: bench"]
            ups = self.upstream.get(name, [])
            if ups:
                lines.append("    materials:")
                for u in ups:
                    lines.append(f"      {u}: {{pipeline: {u}, stage: s{len(self.pipelines[u]) - 1}}}")
            lines.append("    stages:")
            for si, stage in enumerate(stages):
                lines += [f"      - s{si}:", "          fetch_materials: false", "          jobs:"]
                for ji, argv in enumerate(stage):
                    args = ", ".join(json.dumps(a) for a in argv[1:])
                    lines += [f"            j{ji}:", "              tasks:",
                              f"                - exec: {{command: {json.dumps(argv[0])}, arguments: [{args}]}}"]
        return "\n".join(lines) + "\n"

    def makefile(self, stamps: Path | None = None) -> str:
        """One phony target per job; a stage's jobs depend on the previous stage's (or the upstream's last).

        With ``stamps``, each recipe runs in bash and appends ``s TARGET TIME`` and ``e TARGET TIME``
        (``$EPOCHREALTIME``) to that file around its command: the timeline of make's steps.
        """
        out = [".PHONY: all", ""] + (["SHELL := /bin/bash", ""] if stamps else [])
        finals = {p: [f"{p}.s{len(st) - 1}.j{j}" for j in range(len(st[-1]))] for p, st in self.pipelines.items()}
        for name, stages in self.pipelines.items():
            before = [t for u in self.upstream.get(name, ()) for t in finals[u]]
            for si, stage in enumerate(stages):
                targets = [f"{name}.s{si}.j{ji}" for ji in range(len(stage))]
                for t, argv in zip(targets, stage):
                    cmd = shlex.join(argv)
                    if stamps:
                        log = shlex.quote(str(stamps))
                        cmd = f'echo "s $@ $$EPOCHREALTIME" >> {log}; {cmd}; echo "e $@ $$EPOCHREALTIME" >> {log}'
                    out += [f".PHONY: {t}", f"{t}: {' '.join(before)}".rstrip(), f"\t@{cmd}", ""]
                before = targets
        out.insert(1, "all: " + " ".join(t for ts in finals.values() for t in ts))
        return "\n".join(out) + "\n"

    def plan(self) -> dict[str, object]:
        """Plain data for the Prefect runner (it runs in another interpreter)."""
        return {"pipelines": {p: [[list(a) for a in s] for s in st] for p, st in self.pipelines.items()},
                "upstream": self.upstream, "order": self.order()}

    def write(self, root: Path) -> None:
        (root / "pipelines").mkdir(parents=True, exist_ok=True)
        (root / "pipelines" / "bench.gocd.yaml").write_text(self.yaml())
        (root / "Makefile").write_text(self.makefile())


def shops(argv: tuple[str, ...] = TRUE) -> Dag:
    """The Shops example's shape (pipelines/shops.gocd.yaml) with every task replaced by ``argv``.

    db and batch: 6 stages; search, api, ui: 4; qa_deploy fans in search, api
    and ui (2 stages); promote follows qa_deploy (1); prod_deploy follows
    promote (5). 32 jobs, one per stage as in the example. Manual approvals
    are left out: a benchmark has nobody to click.
    """
    d = Dag()
    for name, n in (("db", 6), ("batch", 6), ("search", 4), ("api", 4), ("ui", 4)):
        d.pipelines[name] = [[argv] for _ in range(n)]
    d.pipelines["qa_deploy"] = [[argv], [argv]]
    d.upstream["qa_deploy"] = ["search", "api", "ui"]
    d.pipelines["promote_qa_to_prod"] = [[argv]]
    d.upstream["promote_qa_to_prod"] = ["qa_deploy"]
    d.pipelines["prod_deploy"] = [[argv] for _ in range(5)]
    d.upstream["prod_deploy"] = ["promote_qa_to_prod"]
    return d


def wide(jobs: int, argv: tuple[str, ...] = TRUE) -> Dag:
    """One pipeline, one stage of ``jobs`` jobs."""
    return Dag({"wide": [[argv] * jobs]})


def chain(n: int, argv: tuple[str, ...] = TRUE) -> Dag:
    """``n`` one-job pipelines, each depending on the previous one."""
    d = Dag()
    for i in range(n):
        d.pipelines[f"p{i}"] = [[argv]]
        if i:
            d.upstream[f"p{i}"] = [f"p{i - 1}"]
    return d
