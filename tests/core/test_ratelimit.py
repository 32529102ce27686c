"""Rate limits and connection caps without a server: the token bucket that paces a sender, per-client buckets and
the connection counter."""

from __future__ import annotations

import pytest

from realtime.core.ratelimit import ClientBuckets, ConnectionCounter, TokenBucket

# ---------------------------------------------------------------- the token bucket


def test_rate_zero_is_unlimited() -> None:
    budget = TokenBucket(0, 1.0, now=0.0)
    assert [budget.spend(100.0, now=0.0) for _ in range(5)] == [0.0] * 5


def test_the_burst_at_once_waits_nothing() -> None:
    budget = TokenBucket(2.0, 5.0, now=10.0)
    assert budget.spend(5.0, now=10.0) == 0.0
    assert budget.spend(0.0, now=10.0) == 0.0


def test_beyond_the_burst_the_wait_is_deficit_over_rate() -> None:
    budget = TokenBucket(2.0, 5.0, now=10.0)
    assert budget.spend(4.0, now=10.0) == 0.0
    assert budget.spend(3.0, now=10.0) == pytest.approx(1.0)  # 2 s over at 2 s/s
    budget = TokenBucket(4.0, 1.0, now=0.0)
    assert budget.spend(3.0, now=0.0) == pytest.approx(0.5)
    assert budget.spend(1.0, now=0.5) == pytest.approx(0.25)  # the debt was paid by the wait; 1 s more at 4 s/s


def test_refill_never_exceeds_the_burst() -> None:
    budget = TokenBucket(2.0, 3.0, now=0.0)
    assert budget.spend(3.0, now=0.0) == 0.0
    assert budget.spend(0.0, now=1000.0) == 0.0
    assert budget.tokens == 3.0
    assert budget.spend(4.0, now=1000.0) == pytest.approx(0.5)  # only 3 s were banked, not 2000


def test_a_fast_sender_is_held_to_the_rate() -> None:
    rate, burst, packet = 2.0, 2.0, 0.1
    budget = TokenBucket(rate, burst, now=0.0)
    now, sent, waited = 0.0, 0.0, 0.0
    while now < 60.0:  # a simulated minute; the sender produces audio at 10x real time
        wait = budget.spend(packet, now)
        sent += packet
        waited += wait
        now += wait + packet / 10
    assert waited > 40.0  # it was throttled most of the time
    assert (sent - burst) / now == pytest.approx(rate, rel=0.02)
    assert sent <= burst + rate * now + packet



def test_try_spend_charges_only_what_it_allows() -> None:
    bucket = TokenBucket(0.5, 2.0, now=0.0)
    assert bucket.try_spend(1, 0.0) == 0.0 and bucket.try_spend(1, 0.0) == 0.0
    assert bucket.try_spend(1, 0.0) == pytest.approx(2.0)  # one token at 0.5/s
    assert bucket.try_spend(1, 1.0) == pytest.approx(1.0)  # the refused try cost nothing
    assert bucket.try_spend(1, 2.0) == 0.0


def test_client_buckets_are_per_client_and_bounded() -> None:
    buckets = ClientBuckets(rate=0.1, burst=3, max_clients=100)
    assert [buckets.take("a", 0.0) == 0 for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b", 0.0) == 0.0  # another client has its own burst
    assert buckets.blocked("a", 0.0) > 0 and buckets.blocked("b", 0.0) == 0 and buckets.blocked("new", 0.0) == 0
    assert buckets.take("a", 10.0) == 0.0  # refilled
    for i in range(1000):
        buckets.take(f"scan-{i}", 1.0)
    assert len(buckets._buckets) == 100


def test_a_rate_of_zero_means_no_limit() -> None:
    buckets = ClientBuckets(rate=0, burst=1)
    assert all(buckets.take("a", 0.0) == 0 for _ in range(100))


def test_connection_counter_caps_total_and_per_client() -> None:
    counter = ConnectionCounter(max_total=5, max_per_client=2)
    assert [counter.admit("a") for _ in range(3)] == [None, None, "client"]
    assert [counter.admit(c) for c in "bcd"] == [None, None, None]
    assert counter.admit("e") == "total"
    counter.release("a")
    assert counter.admit("e") is None and counter.total == 5
    counter.release("zzz")  # never admitted: nothing changes
    assert counter.total == 5
    for c in "aebcd":
        counter.release(c)
    assert counter.total == 0 and counter.by_client == {}
