"""The webhook_deliveries table on SQLite and PostgreSQL: replays refused by the store itself, pending polls."""
from __future__ import annotations

import threading
from typing import Any

import pytest

from workbench.server import deliveries as D
from workbench.store import Store


@pytest.fixture
def store(store_url: str) -> Any:
    import workbench.features

    workbench.features.load()
    s = Store.open(store_url)
    yield s
    s.close()


def delivery(did: str = "d-1", outcome: str = D.ACCEPTED, status: int = 202, **kw: Any) -> D.Delivery:
    return D.Delivery(forge="github", delivery_id=did, event="push", outcome=outcome, status=status, **kw)


def test_a_signed_delivery_id_is_taken_once_and_refusals_take_none(store: Any) -> None:
    for _ in range(3):  # unsigned requests claiming the id: rows, but no claim on it
        D.insert(store, delivery(outcome=D.REFUSED, status=401))
    first = D.insert(store, delivery(material_keys=("/r",)), unique=True)
    with pytest.raises(D.Replayed) as replay:
        D.insert(store, delivery(), unique=True)
    assert replay.value.first_at == D.recent(store, 1)[0].received_at
    D.insert(store, D.Delivery(forge="gitlab", delivery_id="d-1", event="Push Hook", outcome=D.IGNORED, status=202),
             unique=True)  # ids are per forge
    assert [d.id for d in D.pending(store)] == [first]
    D.mark_polled(store, [first])
    assert D.pending(store) == [] and D.recent(store, 10)[1].polled_at is not None


def test_concurrent_copies_of_one_delivery_yield_one_row_that_claims_it(store: Any) -> None:
    won, lost = [], []
    barrier = threading.Barrier(8)

    def send() -> None:
        barrier.wait()
        try:
            won.append(D.insert(store, delivery("race"), unique=True))
        except D.Replayed:
            lost.append(1)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7


def test_the_frame(store: Any, tmp_path: Any) -> None:
    from workbench.store.frames import Frames

    D.insert(store, delivery(material_keys=("/a", "/b")), unique=True)
    D.insert(store, delivery("x", outcome=D.REFUSED, status=401, reason="no X-Hub-Signature-256 header"))
    df = Frames(store).webhook_deliveries
    assert list(df["outcome"].astype(str)) == ["accepted", "refused"]
    assert list(df["material_keys"][0]) == ["/a", "/b"] and df["polled_at"].isna().all()


class ForceLog:
    """What PollConfirmations asks of a scheduler (its one call), recorded."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def force(self, keys: list[str]) -> None:
        self.calls.append(list(keys))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_polled_only_after_a_pass_that_began_after_the_force(store: Any) -> None:
    from workbench.server.webhooks import PollConfirmations
    from workbench.triggering import TickReport

    scheduler = ForceLog()
    confirm = PollConfirmations(store, scheduler)
    first = D.insert(store, delivery("a", material_keys=("/a",)), unique=True)
    confirm.submit([first], ["/a"])
    assert scheduler.calls == [["/a"]]
    confirm.on_pass(TickReport())  # may have begun before the force: force again, confirm nothing
    assert scheduler.calls == [["/a"], ["/a"]] and [d.id for d in D.pending(store)] == [first]
    second = D.insert(store, delivery("b", material_keys=("/b",)), unique=True)
    confirm.submit([second], ["/b"])
    confirm.on_pass(TickReport(errors=["store busy"]))  # a's confirming pass failed: a once more, b again
    assert sorted(scheduler.calls[-1]) == ["/a", "/b"] and len(D.pending(store)) == 2
    confirm.on_pass(TickReport())  # began after both forces: both polled
    assert D.pending(store) == []
    calls = len(scheduler.calls)
    confirm.on_pass(TickReport())
    assert len(scheduler.calls) == calls  # nothing left waiting
