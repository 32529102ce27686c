"""Room fan-out without sockets: numbering, late-join backlog, bounded live queues."""

from __future__ import annotations

import json

from realtime.core.protocol import CLOSE_SLOW_LISTENER, UNNUMBERED, Final, Hello, Partial, Status
from realtime.core.room import Room
from realtime.server.rooms import Connection


def final(i: int) -> Final:
    return Final(UNNUMBERED, i, float(i), i + 0.5, f"sentence {i}")


def texts(conn: Connection) -> list[dict]:
    out = [json.loads(t) for t in conn.backlog]
    while not conn.queue.empty():
        item = conn.queue.get_nowait()
        if item is not None:
            out.append(json.loads(item))
    return out


async def test_seq_increases_and_final_ids_are_assigned() -> None:
    room = Room("r")
    a = room.publish(Partial(0, 0.0, "", "hel"))
    b = room.publish(final(0))
    c = room.publish(final(1))
    assert (a, b, c) == (1, 2, 3)
    assert [f.id for f in room.finals] == [0, 1]
    assert [json.loads(t)["id"] for t in room.final_texts()] == [0, 1]


async def test_late_joiner_of_a_long_room_gets_everything_despite_a_small_queue() -> None:
    room = Room("r")
    for i in range(600):
        room.publish(final(i))
    room.publish(Partial(600, 600.0, "so far", "maybe"))
    conn = Connection("listener", maxsize=8)
    room.join(conn, Hello("r", "listener", finals=600))
    assert conn.close_code is None
    got = texts(conn)
    assert got[0]["type"] == "hello" and got[0]["seq"] == room.seq
    assert [e["id"] for e in got[1:601]] == list(range(600))
    assert got[601]["type"] == "partial" and got[601]["committed"] == "so far"


async def test_a_listener_that_does_not_read_is_cut_off_alone() -> None:
    room = Room("r")
    slow, fast = Connection("listener", maxsize=4), Connection("listener", maxsize=64)
    room.join(slow, Hello("r", "listener"))
    room.join(fast, Hello("r", "listener"))
    for _ in range(10):
        room.publish(Status("live"))
        while not fast.queue.empty():  # the fast one keeps reading
            fast.queue.get_nowait()
    assert slow.close_code == CLOSE_SLOW_LISTENER
    assert slow not in room.connections
    assert fast.close_code is None and fast in room.connections


async def test_listener_queue_of_zero_is_still_bounded() -> None:
    conn = Connection("listener", maxsize=0)
    assert conn.queue.maxsize == 1
