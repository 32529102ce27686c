"""The LLM budget without a server: reservations cover the worst case, any number of them stays within the pool,
settling charges what was used, pools are separate, the daily cap is server-wide."""

from __future__ import annotations

import pytest

from realtime.notes.budget import LLMBudget, Reservation

DAY = "2026-12-02"


def budget(notes: int = 1000, visitors: int = 500, daily: int = 0) -> LLMBudget:
    b = LLMBudget({"notes": notes, "visitors": visitors}, daily)
    b.load_day(DAY, 0)
    b.load_room("r", {})
    return b


def test_reservations_never_exceed_the_pool() -> None:
    b = budget(visitors=500)
    held = [b.reserve("r", "visitors", 120, DAY) for _ in range(10)]
    granted = [r for r in held if isinstance(r, Reservation)]
    assert len(granted) == 4 and held[4:] == ["room"] * 6
    assert b.left("r", "visitors") == 20


def test_settling_charges_what_was_used_and_frees_the_rest() -> None:
    b = budget(visitors=500)
    r = b.reserve("r", "visitors", 400, DAY)
    assert isinstance(r, Reservation)
    assert b.settle(r, 150) == 150
    assert b.spent("r", "visitors") == 150 and b.left("r", "visitors") == 350


def test_pools_are_separate() -> None:
    b = budget(notes=1000, visitors=100)
    assert b.reserve("r", "visitors", 200, DAY) == "room"
    assert isinstance(b.reserve("r", "notes", 200, DAY), Reservation)


def test_what_was_spent_before_counts() -> None:
    b = LLMBudget({"notes": 1000, "visitors": 500})
    b.load_day(DAY, 0)
    b.load_room("r", {"visitors": 450})
    assert b.reserve("r", "visitors", 100, DAY) == "room"
    b.load_room("r", {"visitors": 0})  # a room the budget knows keeps its live figures
    assert b.spent("r", "visitors") == 450


def test_the_daily_cap_is_server_wide() -> None:
    b = budget(notes=10_000, daily=300)
    b.load_room("s", {})
    first = b.reserve("r", "notes", 200, DAY)
    assert isinstance(first, Reservation)
    assert b.reserve("s", "notes", 200, DAY) == "day"
    b.settle(first, 50)
    assert isinstance(b.reserve("s", "notes", 200, DAY), Reservation)
    b.load_day("2026-12-03", 0)  # a new day starts from what the store says was spent on it
    assert isinstance(b.reserve("r", "notes", 300, "2026-12-03"), Reservation)


def test_unknown_rooms_and_days_are_a_bug_of_the_caller() -> None:
    b = budget()
    with pytest.raises(KeyError):
        b.reserve("nowhere", "notes", 1, DAY)
    with pytest.raises(KeyError):
        b.reserve("r", "notes", 1, "1999-01-01")


def test_forgetting_a_room_drops_its_figures() -> None:
    b = budget()
    b.settle(b.reserve("r", "notes", 100, DAY), 100)  # type: ignore[arg-type]
    b.forget("r")
    assert not b.known("r") and b.spent("r") == 0
