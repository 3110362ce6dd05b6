"""The kit's bounded queue (services/kit/turns.py) with real greenthreads and real sleeps: the
wait it promises is the wait callers get, also when its turns share a slower resource."""
import time

import eventlet
import pytest

from services.kit.errors import Busy
from services.kit.turns import Turns, TurnTimeout


def crowd(turns, callers, work):
    """``callers`` greenthreads asking for a turn at once: each one's ("ran"|"busy", seconds
    waited for its turn or for its refusal)."""
    outcomes = []

    def caller():
        asked = time.monotonic()
        try:
            with turns.turn():
                waited = time.monotonic() - asked
                work()
            outcomes.append(("ran", waited))
        except Busy:
            outcomes.append(("busy", time.monotonic() - asked))

    threads = [eventlet.spawn(caller) for _ in range(callers)]
    for thread in threads:
        thread.wait()
    return outcomes


def test_turns_sharing_one_slot_behind_them_are_not_promised_a_parallel_speed_up():
    # 4 turns at once, but what they wait on serves one at a time (the gateway's logins in
    # front of auth's one argon2 slot): admitted callers still wait about max_wait at most
    behind = eventlet.semaphore.Semaphore(1)

    def serial_work():
        with behind:
            eventlet.sleep(0.05)

    turns = Turns(concurrency=4, max_wait=0.5)
    crowd(turns, 2, serial_work)  # a quiet moment: one turn's duration is known
    for _ in range(2):  # the first burst, and one after drains have been seen
        outcomes = crowd(turns, 40, serial_work)
        waits = [waited for outcome, waited in outcomes if outcome == "ran"]
        refusals = [waited for outcome, waited in outcomes if outcome == "busy"]
        assert refusals and max(refusals) < 0.05  # refused at once
        # 0.5 s of serial 0.05-s turns is ~10 waiting; dividing by the 4 slots let ~40 in
        assert max(waits) < 0.5 + 0.2, sorted(waits)
        assert len(waits) >= 8  # and it is not refusing what it could serve in time
    assert turns.seconds_between_ends == pytest.approx(0.05, rel=0.5)


def test_parallel_turns_queue_as_many_as_they_drain():
    turns = Turns(concurrency=4, max_wait=0.5)
    crowd(turns, 40, lambda: eventlet.sleep(0.05))  # the drain: 4 turns per 0.05 s
    assert turns.seconds_between_ends == pytest.approx(0.05 / 4, rel=0.6)
    outcomes = crowd(turns, 60, lambda: eventlet.sleep(0.05))
    waits = [waited for outcome, waited in outcomes if outcome == "ran"]
    assert len(waits) > 20  # more than one-at-a-time's ~10 + 4
    assert max(waits) < 0.5 + 0.2


def test_a_queue_limit_refuses_beyond_it_whatever_the_estimate():
    turns = Turns(concurrency=1, max_wait=60, queue=2)
    outcomes = crowd(turns, 6, lambda: eventlet.sleep(0.01))
    assert sorted(outcome for outcome, _ in outcomes) == ["busy"] * 3 + ["ran"] * 3


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_turns_are_taken_in_arrival_order_also_by_a_caller_that_just_had_one(timeout):
    # the gateway's login turns: a client on a keep-alive connection asks again as soon as its
    # answer is out, and its next request is often read before the hub has woken anyone; it
    # must queue behind those who waited meanwhile (eventlet's Semaphore let it straight back)
    turns = Turns(concurrency=1, max_wait=60)
    order = []
    holding = eventlet.event.Event()

    def first():
        with turns.turn(timeout=timeout):
            order.append("first")
            holding.wait()
        with turns.turn(timeout=timeout):  # again at once, without yielding to the hub
            order.append("first again")

    def later(name):
        with turns.turn(timeout=timeout):
            order.append(name)

    threads = [eventlet.spawn(first)]
    while turns.admitted < 1:
        eventlet.sleep(0)
    for name in ("second", "third"):
        threads.append(eventlet.spawn(later, name))
        while turns.admitted < len(threads):  # waiting now, in this order
            eventlet.sleep(0)
    holding.send()
    for thread in threads:
        thread.wait()
    assert order == ["first", "second", "third", "first again"]
    assert turns.admitted == 0


def test_a_caller_that_gives_up_leaves_the_queue_and_no_turn_is_lost():
    turns = Turns(concurrency=1, max_wait=60)
    holding, order = eventlet.event.Event(), []

    def hold():
        with turns.turn():
            order.append("holder")
            holding.wait()

    def impatient():
        try:
            with turns.turn(timeout=0.01):
                order.append("impatient")
        except TurnTimeout:
            order.append("timed out")

    def patient():
        with turns.turn(timeout=60):
            order.append("patient")

    holder = eventlet.spawn(hold)
    while turns.admitted < 1:
        eventlet.sleep(0)
    eventlet.spawn(impatient).wait()  # its turn did not come within its timeout
    waiter = eventlet.spawn(patient)
    while turns.admitted < 2:
        eventlet.sleep(0)
    killed = eventlet.spawn(patient)
    while turns.admitted < 3:
        eventlet.sleep(0)
    killed.kill()  # gone while waiting
    holding.send()
    holder.wait()
    waiter.wait()
    assert order == ["holder", "timed out", "patient"]
    assert (turns.admitted, turns.free) == (0, 1)


def test_a_turn_handed_to_a_caller_killed_before_it_woke_goes_to_the_next():
    turns = Turns(concurrency=1, max_wait=60)
    holding, order = eventlet.event.Event(), []

    def caller(name):
        with turns.turn(timeout=60):
            order.append(name)
            if name == "first":
                holding.wait()

    threads = []
    for name in ("first", "second", "third"):
        threads.append(eventlet.spawn(caller, name))
        while turns.admitted < len(threads):
            eventlet.sleep(0)
    holding.send()
    while len(turns._waiting) == 2:  # the first's turn is over and handed to the second
        eventlet.sleep(0)
    threads[1].kill()  # before it ran
    for thread in (threads[0], threads[2]):
        thread.wait()
    assert order == ["first", "third"]
    assert (turns.admitted, turns.free) == (0, 1)
