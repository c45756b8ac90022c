"""The claim ledger, the worker's memory of the claims it holds: room, the
ready queue in claim order, and claims that leave before an executor starts them."""

from __future__ import annotations

import uuid

from goodfellaz17.db.repository import ClaimedTask
from goodfellaz17.worker.claims import ClaimLedger


def claimed(count: int) -> list[ClaimedTask]:
    return [
        ClaimedTask(
            id=uuid.uuid4(),
            order_id=uuid.UUID(int=1),
            seq=i,
            quantity=400,
            attempt=1,
            fencing_token=100 + i,
            queue_position=float(i),
            target="t",
            backend="simulated",
            node_id=1,
            node_identifier="sim-local-1",
            endpoint=None,
            capacity_per_hour=3600,
        )
        for i in range(count)
    ]


async def test_room_counts_held_claims_and_batches_being_claimed() -> None:
    ledger = ClaimLedger(capacity=5)
    ledger.reserve(2)
    assert ledger.room() == 3
    await ledger.hold(claimed(2))
    ledger.unreserve(2)
    assert (len(ledger), ledger.room()) == (2, 3)


async def test_executors_take_claims_in_claim_order_and_skip_lost_ones() -> None:
    ledger = ClaimLedger(capacity=10)
    tasks = claimed(3)
    await ledger.hold(tasks)
    ledger.forget(tasks[0].id)  # its lease was lost while it waited
    first = ledger.pop_ready()
    assert first is not None
    assert first.task == tasks[0]
    assert ledger.start(first) is False
    second = ledger.pop_ready()
    assert second is not None
    assert second.task == tasks[1]
    assert ledger.start(second) is True
    assert (ledger.executing, ledger.started()) == (1, [second])
    ledger.finish()
    assert ledger.executing == 0
    async with ledger.ready_signal:
        third = ledger.pop_ready()
    assert third is not None
    assert third.task == tasks[2]
    assert ledger.pop_ready() is None


async def test_take_unstarted_empties_the_ready_queue_of_claims_still_held() -> None:
    ledger = ClaimLedger(capacity=10)
    tasks = claimed(4)
    await ledger.hold(tasks)
    running = ledger.pop_ready()
    assert running is not None
    assert ledger.start(running)
    ledger.forget(tasks[1].id)
    unstarted = await ledger.take_unstarted()
    assert [h.task for h in unstarted] == tasks[2:]
    assert ledger.pop_ready() is None
    assert tasks[0].id in ledger  # the started claim stays held until its outcome


async def test_held_since_names_claims_not_extended_since_the_cutoff() -> None:
    ledger = ClaimLedger(capacity=10)
    await ledger.hold(claimed(2))
    old, fresh = ledger.pop_ready(), ledger.pop_ready()
    assert old is not None
    assert fresh is not None
    old.claimed_at, fresh.claimed_at = 100.0, 200.0
    assert ledger.held_since(150.0) == [old]
