"""The upstream hosts' slots (proxy.inflight): taken without waiting while free,
waited for in order, never lost when a waiter gives up."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from vaultd.proxy import inflight
from vaultd.proxy.inflight import InFlight, PoolBusy, TooManyInFlight

HOST = ("127.0.0.1", 443)


@pytest.fixture(autouse=True)
def two_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inflight, "CONNECTIONS_PER_HOST", 2)


def test_free_slots_are_taken_at_once_and_given_back() -> None:
    slots = InFlight(per_session=10, pool_timeout=1)
    assert slots.try_enter("a", HOST) and slots.try_enter("b", HOST)
    assert not slots.try_enter("c", HOST)  # both in use
    assert slots.busy(HOST) == 2 and slots.count("c") == 0
    slots.leave("a", HOST)
    assert slots.try_enter("c", HOST)
    assert slots.count("a") == 0 and slots.count("c") == 1 and slots.total() == 2
    assert slots.try_enter("d", ("127.0.0.1", 8443))  # another host has its own


def test_a_session_at_its_maximum_is_refused_and_nothing_is_counted() -> None:
    slots = InFlight(per_session=1, pool_timeout=1)
    assert slots.try_enter("a", HOST)
    with pytest.raises(TooManyInFlight):
        slots.try_enter("a", HOST)
    assert slots.count("a") == 1 and slots.busy(HOST) == 1


@pytest.mark.timeout(10)
async def test_waiters_get_slots_in_the_order_they_came() -> None:
    slots = InFlight(per_session=10, pool_timeout=5)
    assert slots.try_enter("x", HOST) and slots.try_enter("y", HOST)
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.enter(name, HOST)
        order.append(name)

    tasks = [asyncio.create_task(wait(name)) for name in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    assert order == [] and slots.total() == 5  # waiters count for their sessions
    assert not slots.try_enter("late", HOST)  # no jumping the queue, even when one frees
    for held, expected in (("x", ["a"]), ("y", ["a", "b"]), ("a", ["a", "b", "c"])):
        slots.leave(held, HOST)
        await asyncio.sleep(0.01)
        assert order == expected
    await asyncio.gather(*tasks)
    assert slots.busy(HOST) == 2


@pytest.mark.timeout(10)
async def test_a_wait_past_pool_timeout_is_a_503_and_takes_nothing() -> None:
    slots = InFlight(per_session=10, pool_timeout=0.05)
    assert slots.try_enter("x", HOST) and slots.try_enter("y", HOST)
    with pytest.raises(PoolBusy):
        await slots.enter("a", HOST)
    assert slots.count("a") == 0 and slots.busy(HOST) == 2
    slots.leave("x", HOST)
    assert slots.busy(HOST) == 1  # nobody waits any more: the slot is free
    assert slots.try_enter("b", HOST)


@pytest.mark.timeout(10)
async def test_a_slot_handed_to_a_waiter_that_was_cancelled_goes_to_the_next() -> None:
    slots = InFlight(per_session=10, pool_timeout=5)
    assert slots.try_enter("x", HOST) and slots.try_enter("y", HOST)
    first = asyncio.create_task(slots.enter("a", HOST))
    second = asyncio.create_task(slots.enter("b", HOST))
    await asyncio.sleep(0.01)
    slots.leave("x", HOST)  # the slot goes to "a"...
    first.cancel()  # ...which is cancelled before it runs again (its client left)
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # "b" got the slot "a" could not use
    assert slots.count("a") == 0 and slots.count("b") == 1 and slots.busy(HOST) == 2
    for name in ("y", "b"):
        slots.leave(name, HOST)
    assert slots.busy(HOST) == 0 and slots.total() == 0


@pytest.mark.timeout(10)
async def test_a_waiter_cancelled_while_waiting_leaves_the_queue() -> None:
    slots = InFlight(per_session=10, pool_timeout=5)
    assert slots.try_enter("x", HOST) and slots.try_enter("y", HOST)
    gone = asyncio.create_task(slots.enter("a", HOST))
    await asyncio.sleep(0.01)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert slots.count("a") == 0
    slots.leave("x", HOST)
    assert slots.busy(HOST) == 1 and slots.try_enter("b", HOST)


@pytest.mark.timeout(10)
async def test_a_slot_given_back_between_a_waiters_cancellation_and_its_exit_is_not_lost() -> None:
    """The cancellation cancels the waiter's turn at once; a ``leave`` that runs before
    the waiter does drops that turn from the queue. The waiter still leaves cleanly:
    its session is no longer counted, and the slot is free."""
    slots = InFlight(per_session=1, pool_timeout=5)
    assert slots.try_enter("x", HOST) and slots.try_enter("y", HOST)
    waiter = asyncio.create_task(slots.enter("a", HOST))
    await asyncio.sleep(0.01)
    waiter.cancel()
    slots.leave("x", HOST)  # before the waiter runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert slots.count("a") == 0 and slots.busy(HOST) == 1
    assert slots.try_enter("a", HOST)  # not refused as if still in flight


@pytest.mark.timeout(10)
async def test_a_wait_timing_out_as_a_slot_is_given_back_is_a_503_not_a_crash() -> None:
    slots = InFlight(per_session=10, pool_timeout=0.05)
    assert slots.try_enter("x", HOST) and slots.try_enter("y", HOST)
    loop = asyncio.get_running_loop()
    waiter = asyncio.create_task(slots.enter("a", HOST))
    await asyncio.sleep(0)
    # Both due in one turn of the loop: the timeout, then the leave.
    loop.call_at(loop.time() + 0.051, slots.leave, "x", HOST)
    time.sleep(0.1)  # blocks the loop on purpose: both callbacks come due together
    with contextlib.suppress(PoolBusy):  # the timeout won
        await waiter
    assert slots.count("a") in (0, 1)  # 1 only if it got the slot after all
    held = slots.count("a")
    assert slots.busy(HOST) == 1 + held
