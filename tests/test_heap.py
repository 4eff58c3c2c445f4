"""The collector as the gateway sets it: what is loaded frozen, what a reload replaced freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from conftest import GatewayFactory

from gateway import heap


@pytest.fixture(autouse=True)
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


class _Node:
    def __init__(self) -> None:
        self.peer: _Node = self


def test_settle_freezes_what_is_alive_and_makes_collections_rare() -> None:
    kept = _Node()
    heap.settle()
    assert gc.get_threshold() == heap.THRESHOLDS
    assert gc.get_freeze_count() > 0
    assert all(obj is not kept for obj in gc.get_objects())  # frozen: out of every walk


def test_a_cycle_frozen_before_is_freed_by_the_next_settle() -> None:
    # The contract set a reload replaced was frozen with everything else: if it holds cycles,
    # they are freed at the next settle rather than kept for the life of the process.
    cycle = _Node()
    gone = weakref.ref(cycle)
    heap.settle()
    del cycle
    gc.collect()
    assert gone() is not None  # frozen: out of the collector's reach
    heap.settle()
    assert gone() is None


async def test_a_reload_settles_the_heap_only_in_a_serving_gateway(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled: list[None] = []
    monkeypatch.setattr(heap, "settle", lambda: settled.append(None))
    gateway = await make_gateway()
    await gateway.runtime.reload()
    assert settled == []  # a test process's collector is its own
    gateway.runtime.settles_heap = True  # as `serve` sets it
    await gateway.runtime.reload()
    assert settled == [None]
