"""`kerasflow run` keeps the garbage collector off while it starts, and hands it back as it was."""

from __future__ import annotations

import gc

import pytest

from kerasflow.pipelines.local_run import collector_paused

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def collector_as_a_fresh_process_has_it():
    gc.unfreeze()
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def test_the_collector_is_off_until_resumed_and_what_lived_is_frozen_until_the_end():
    with collector_paused() as resume:
        assert not gc.isenabled()
        resume()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        made_later = [[] for _ in range(1000)]
        resume()  # once only: what the run makes later is not frozen
        assert gc.get_freeze_count() <= frozen and made_later
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_the_collector_comes_back_on_when_the_block_fails_before_resuming():
    with pytest.raises(ValueError), collector_paused():
        assert not gc.isenabled()
        raise ValueError("the store cannot be used")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_collector_that_was_off_stays_off_and_what_was_frozen_stays_frozen():
    gc.disable()
    gc.freeze()
    with collector_paused() as resume:
        resume()
        assert not gc.isenabled()
    assert not gc.isenabled() and gc.get_freeze_count() > 0
