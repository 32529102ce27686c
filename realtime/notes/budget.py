"""What the LLM may still spend (sans-I/O): per room and pool, and per day for the whole server.

Every call reserves its worst case — the prompt's estimated tokens plus the `max_tokens` it may answer with —
before it is made, and settles to what the answer reports afterwards. Check and charge happen in one step, so any
number of concurrent requests can never together exceed a budget (measured before this existed: 150 concurrent
questions made 100 calls against a budget worth about 43).

A room has three pools: `notes` (the live notes, run by the server for the lecture), `visitors` (questions and
summaries, asked for over HTTP) and `translation` (caption translations for its viewers). Visitors can spend their
pool to nothing without freezing the lecture's notes, and translations cannot spend the notes' either.
The shell persists what is settled (the store's `add_llm_tokens` and `add_daily_tokens`), so a restart or a room
released from memory does not hand out its budget again.
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime.core.records import TOKEN_POOLS

POOLS = TOKEN_POOLS  # notes, visitors, translation


@dataclass(frozen=True)
class Reservation:
    room: str
    pool: str
    day: str
    tokens: int


class LLMBudget:
    def __init__(self, per_room: dict[str, int], daily_cap: int = 0):
        """`per_room`: tokens each room may spend per pool (a pool left out: none); `daily_cap`: tokens per day
        server-wide (0 = no cap)."""
        if not set(per_room) <= set(POOLS):
            raise ValueError(f"budgets are for the pools {POOLS}")
        self.per_room = {pool: int(per_room.get(pool, 0)) for pool in POOLS}
        self.daily_cap = daily_cap
        self._spent: dict[tuple[str, str], int] = {}
        self._reserved: dict[tuple[str, str], int] = {}
        self._day = ""
        self._day_spent = 0
        self._day_reserved = 0

    @property
    def day(self) -> str:
        """The day (UTC, ISO) whose server-wide spend is loaded."""
        return self._day

    def known(self, room: str) -> bool:
        return (room, POOLS[0]) in self._spent

    def load_room(self, room: str, spent: dict[str, int]) -> None:
        """What a room spent before (from the store); a room the budget knows already keeps its live figures."""
        for pool in POOLS:
            self._spent.setdefault((room, pool), max(0, int(spent.get(pool, 0))))
            self._reserved.setdefault((room, pool), 0)

    def load_day(self, day: str, spent: int) -> None:
        if day != self._day:
            self._day, self._day_spent, self._day_reserved = day, max(0, spent), 0

    def forget(self, room: str) -> None:
        for pool in POOLS:
            self._spent.pop((room, pool), None)
            self._reserved.pop((room, pool), None)

    def spent(self, room: str, pool: str | None = None) -> int:
        pools = POOLS if pool is None else (pool,)
        return sum(self._spent.get((room, p), 0) for p in pools)

    def left(self, room: str, pool: str) -> int:
        key = (room, pool)
        return self.per_room[pool] - self._spent.get(key, 0) - self._reserved.get(key, 0)

    def reserve(self, room: str, pool: str, tokens: int, day: str) -> Reservation | str:
        """A reservation of `tokens`, or why there is none: "room" (the room's pool is spent) or "day" (the
        server's daily cap). The caller loads the room and the day first."""
        key = (room, pool)
        if key not in self._spent:
            raise KeyError(f"room {room!r} is not loaded")
        if day != self._day:
            raise KeyError(f"day {day} is not loaded")
        if tokens > self.left(room, pool):
            return "room"
        if self.daily_cap and self._day_spent + self._day_reserved + tokens > self.daily_cap:
            return "day"
        self._reserved[key] += tokens
        self._day_reserved += tokens
        return Reservation(room, pool, day, tokens)

    def settle(self, reservation: Reservation, used: int) -> int:
        """Release a reservation and charge what was used (what the answer reports; a failed call that reported
        nothing charges the reservation, since the endpoint may have billed it). Returns the tokens charged."""
        key = (reservation.room, reservation.pool)
        used = max(0, int(used))
        if key in self._reserved:
            self._reserved[key] = max(0, self._reserved[key] - reservation.tokens)
            self._spent[key] += used
        if reservation.day == self._day:
            self._day_reserved = max(0, self._day_reserved - reservation.tokens)
            self._day_spent += used
        return used


class NoBudget(Exception):
    """No LLM call: the room's pool or the server's daily cap is spent (the message says which)."""
