"""Two schedulers on one store: each has its own Store (own connections, own in-process lock),
so only the database's locking (SQLite's write lock, PostgreSQL's row locks) keeps them correct."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

import pytest

from workbench.errors import InvalidState
from workbench.status import Status
from workbench.store import Store


def _race(stores: list[Store], work: Callable[[Store], Any]) -> list[Any]:
    barrier = threading.Barrier(len(stores))
    results: list[Any] = [None] * len(stores)

    def go(i: int) -> None:
        barrier.wait()
        results[i] = work(stores[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.timeout(120)
def test_two_schedulers_never_claim_the_same_stage_or_counter(store_url: str) -> None:
    stores = [Store.open(store_url) for _ in range(3)]
    try:
        runs = [stores[0].create_pipeline_run("p", label_for=str, trigger="manual", triggered_by="a") for _ in range(15)]

        def claim_all(store: Store) -> list[int]:
            won = []
            for run in runs:
                try:
                    store.create_stage_run(run.id, "build", 0, expect_stage_runs=0)
                    won.append(run.id)
                except InvalidState:
                    pass
            return won

        wins = Counter(rid for won in _race(stores, claim_all) for rid in won)
        assert wins == Counter({run.id: 1 for run in runs})  # each stage claimed exactly once
        assert all(len(stores[1].run_detail(run.id).stages) == 1 for run in runs)

        def trigger(store: Store) -> list[tuple[str, int]]:  # first runs of new pipelines, everywhere at once
            return [(f"fresh{i}", store.create_pipeline_run(f"fresh{i}", label_for=str, trigger="manual",
                                                            triggered_by="b").counter) for i in range(20)]

        per_pipeline: dict[str, list[int]] = {}
        for got in _race(stores, trigger):
            for name, counter in got:
                per_pipeline.setdefault(name, []).append(counter)
        assert {name: sorted(c) for name, c in per_pipeline.items()} == {f"fresh{i}": [1, 2, 3] for i in range(20)}
    finally:
        for s in stores:
            s.close()


@pytest.mark.timeout(60)
def test_two_approvals_at_once_one_wins(store_url: str) -> None:
    stores = [Store.open(store_url) for _ in range(4)]
    try:
        run = stores[0].create_pipeline_run("p", label_for=str, trigger="manual", triggered_by="a")
        stage, _ = stores[0].create_stage_run(run.id, "deploy", 0, approval_type="manual", status=Status.WAITING)

        def approve(store: Store) -> bool:
            try:
                store.set_stage_status(stage.id, Status.SCHEDULED, expect=[Status.WAITING], approved_by=str(id(store)))
                return True
            except InvalidState:
                return False

        assert sorted(_race(stores, approve)) == [False, False, False, True]
        assert stores[0].get_stage_run(stage.id).status == Status.SCHEDULED
    finally:
        for s in stores:
            s.close()
