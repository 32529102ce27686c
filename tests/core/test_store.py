"""The persistence layer: round trips, ordering, concurrent use of one file, and durability across SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from realtime.store import (
    SCHEMA_VERSION,
    RoomExists,
    RoomRecord,
    RoomState,
    SQLiteStore,
    Store,
    open_store,
)

ROOT = Path(__file__).resolve().parents[2]


def final(i: int, seq: int, text: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": "final", "seq": seq, "id": i, "utterance": i, "start": i * 2.0, "end": i * 2.0 + 1.5,
            "text": text or f"Satz {i} über Übung", "language": "de",
            "words": [{"w": "Satz", "start": i * 2.0, "end": i * 2.0 + 0.4, "p": 0.9}], **extra}


def notes(version: int, seq: int) -> dict[str, Any]:
    return {"type": "notes", "seq": seq, "version": version, "source": "extractive",
            "bullets": [{"id": f"b{version}", "text": f"**Punkt** {version}", "refs": [0], "parent": None}],
            "added": [f"b{version}"], "changed": [], "removed": []}


def summary(seq: int, markdown: str = "# Zusammenfassung") -> dict[str, Any]:
    return {"type": "summary", "seq": seq, "source": "extractive", "finals": 2, "markdown": markdown}


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    s = SQLiteStore(":memory:" if request.param == "memory" else str(tmp_path / "store.db"))
    yield s
    s.close()


def count_rows(path: Path, table: str, room: str) -> int:
    column = "name" if table == "rooms" else "room"
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (room,)).fetchone()[0]


# ---------------------------------------------------------------- round trips


def test_open_store_is_a_store_and_memory_works():
    s = open_store(":memory:")
    assert isinstance(s, SQLiteStore) and isinstance(s, Store)
    s.add_room(RoomRecord("r", title="Analysis I"))
    assert s.get_room("r") == RoomRecord("r", title="Analysis I")
    s.close()
    s.close()  # closing twice is harmless


def test_room_round_trip(store: SQLiteStore):
    rec = RoomRecord("ana1", title="Analysis I — Folgen", created_at=1700000000.5, speaker_key_hash="sk",
                     viewer_key_hash="vk", seq_reserved=1000, audio_s=12.5, glossary="Cauchy, Konvergenz")
    store.add_room(rec)
    assert store.get_room("ana1") == rec
    assert store.get_room("nope") is None
    assert store.list_rooms() == [rec]
    state = store.load_room("ana1")
    assert state == RoomState(record=rec, finals=[], notes=None, summary=None)
    assert store.load_room("nope") is None


def test_add_room_twice_raises_and_keeps_the_first(store: SQLiteStore):
    store.add_room(RoomRecord("r", title="first", speaker_key_hash="a"))
    with pytest.raises(RoomExists):
        store.add_room(RoomRecord("r", title="second"))
    assert store.get_room("r") == RoomRecord("r", title="first", speaker_key_hash="a")


def test_list_rooms_by_created_at_then_name(store: SQLiteStore):
    for name, created in [("c", 2.0), ("b", 1.0), ("z", 0.5), ("a", 1.0)]:
        store.add_room(RoomRecord(name, created_at=created))
    assert [r.name for r in store.list_rooms()] == ["z", "a", "b", "c"]


def test_load_room_brings_back_everything(store: SQLiteStore):
    store.add_room(RoomRecord("r", title="T", created_at=5.0))
    store.save_final("r", final(1, 4), audio_s=4.0)  # out of id order on purpose
    store.save_final("r", final(0, 2), audio_s=2.0)
    store.save_notes("r", notes(1, 3))
    store.save_notes("r", notes(2, 6))
    store.save_summary("r", summary(7, "alt"))
    store.save_summary("r", summary(9, "neu"))
    store.save_progress("r", 30.0, glossary="Übung, Grenzwert")
    state = store.load_room("r")
    assert state is not None
    assert state.finals == [final(0, 2), final(1, 4)]  # in id order, unicode and nested lists intact
    assert state.notes == notes(2, 6)
    assert state.summary == summary(9, "neu")
    assert state.record == RoomRecord("r", title="T", created_at=5.0, seq_reserved=9, audio_s=30.0,
                                      glossary="Übung, Grenzwert")


def test_round_trip_survives_reopening(tmp_path: Path):
    path = tmp_path / "deep" / "er" / "realtime.db"  # parents are created
    with SQLiteStore(str(path)) as s:
        s.add_room(RoomRecord("r", title="T", viewer_key_hash="v"))
        s.save_final("r", final(0, 1), audio_s=1.5)
        s.save_notes("r", notes(1, 2))
        s.save_summary("r", summary(3))
        s.set_meta("admin_key_hash", "h")
    with SQLiteStore(str(path)) as s:
        assert s.load_room("r") == RoomState(RoomRecord("r", title="T", viewer_key_hash="v", seq_reserved=3,
                                                        audio_s=1.5), [final(0, 1)], notes(1, 2), summary(3))
        assert s.get_meta("admin_key_hash") == "h"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1


def test_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "x.db"
    SQLiteStore(str(path)).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteStore(str(path))


def test_meta_round_trip(store: SQLiteStore):
    assert store.get_meta("admin_key_hash") is None
    store.set_meta("admin_key_hash", "one")
    store.set_meta("admin_key_hash", "two")
    store.set_meta("other", "ä")
    assert store.get_meta("admin_key_hash") == "two"
    assert store.get_meta("other") == "ä"


def test_delete_room_cascades(tmp_path: Path):
    path = tmp_path / "s.db"
    with SQLiteStore(str(path)) as s:
        for room in ("gone", "kept"):
            s.add_room(RoomRecord(room))
            s.save_final(room, final(0, 1), audio_s=1.0)
            s.save_notes(room, notes(1, 2))
            s.save_summary(room, summary(3))
        assert s.delete_room("gone") is True
        assert s.delete_room("gone") is False
        assert s.delete_room("never") is False
        assert s.get_room("gone") is None and s.load_room("gone") is None
        assert s.events_after("gone", 0) == []
        assert [r.name for r in s.list_rooms()] == ["kept"]
        # re-creating the name starts empty: nothing of the old room comes back
        s.add_room(RoomRecord("gone"))
        assert s.load_room("gone") == RoomState(RoomRecord("gone"), [], None, None)
    for table in ("finals", "notes", "summaries"):
        assert count_rows(path, table, "gone") == 0
        assert count_rows(path, table, "kept") == 1


# ---------------------------------------------------------------- finals, progress, seq


def test_save_final_creates_a_missing_room_open(store: SQLiteStore):
    before = time.time()
    store.save_final("new", final(0, 1), audio_s=2.0)
    rec = store.get_room("new")
    assert rec is not None
    assert rec.speaker_key_hash is None and rec.viewer_key_hash is None
    assert (rec.seq_reserved, rec.audio_s) == (1, 2.0)
    assert before <= rec.created_at <= time.time()


def test_save_final_is_idempotent(store: SQLiteStore):
    store.add_room(RoomRecord("r"))
    store.save_final("r", final(0, 1, "erste Fassung"), audio_s=1.0)
    store.save_final("r", final(0, 1, "zweite Fassung"), audio_s=1.0)
    store.save_final("r", final(1, 2), audio_s=2.0)
    state = store.load_room("r")
    assert state is not None
    assert [f["text"] for f in state.finals] == ["zweite Fassung", final(1, 2)["text"]]
    assert [e["id"] for e in store.events_after("r", 0)] == [0, 1]


def test_audio_s_and_seq_reserved_are_never_lowered(store: SQLiteStore):
    store.add_room(RoomRecord("r"))
    store.save_final("r", final(0, 5), audio_s=10.0)
    store.save_final("r", final(1, 3), audio_s=4.0)  # lower on both counts
    rec = store.get_room("r")
    assert rec is not None and (rec.seq_reserved, rec.audio_s) == (5, 10.0)
    store.reserve_seq("r", 1005)
    store.reserve_seq("r", 7)
    store.save_progress("r", 3.0)
    rec = store.get_room("r")
    assert rec is not None and (rec.seq_reserved, rec.audio_s, rec.glossary) == (1005, 10.0, "")
    store.save_progress("r", 12.5, glossary="Begriffe")
    store.save_progress("r", 11.0)  # glossary None leaves it alone
    store.save_final("r", final(2, 1006), audio_s=11.0)
    rec = store.get_room("r")
    assert rec is not None and (rec.seq_reserved, rec.audio_s, rec.glossary) == (1006, 12.5, "Begriffe")


def test_reserve_seq_and_progress_on_a_missing_room_create_it(store: SQLiteStore):
    store.reserve_seq("a", 1000)
    store.save_progress("b", 3.0, glossary="g")
    assert store.get_room("a") == RoomRecord("a", created_at=store.get_room("a").created_at, seq_reserved=1000)
    b = store.get_room("b")
    assert b is not None and (b.audio_s, b.glossary, b.seq_reserved) == (3.0, "g", 0)


def test_notes_and_summary_raise_seq_reserved(store: SQLiteStore):
    store.add_room(RoomRecord("r", seq_reserved=10))
    store.save_notes("r", notes(1, 12))
    assert store.get_room("r").seq_reserved == 12
    store.save_summary("r", summary(15))
    assert store.get_room("r").seq_reserved == 15
    store.save_notes("r", notes(2, 13))  # lower: kept at 15
    assert store.get_room("r").seq_reserved == 15


def test_events_after_merges_in_seq_order(store: SQLiteStore):
    store.add_room(RoomRecord("r"))
    store.add_room(RoomRecord("other"))
    store.save_final("r", final(0, 1), audio_s=1.0)
    store.save_final("r", final(1, 2), audio_s=2.0)
    store.save_notes("r", notes(1, 3))
    store.save_final("r", final(2, 5), audio_s=3.0)
    store.save_notes("r", notes(2, 6))
    store.save_summary("r", summary(8))
    store.save_final("r", final(3, 9), audio_s=4.0)
    store.save_notes("r", notes(3, 10))
    store.save_final("other", final(0, 4), audio_s=1.0)
    store.save_notes("other", notes(1, 7))

    def seen(after: int) -> list[tuple[str, int]]:
        return [(e["type"], e["seq"]) for e in store.events_after("r", after)]

    everything = [("final", 1), ("final", 2), ("notes", 3), ("final", 5), ("notes", 6), ("summary", 8),
                  ("final", 9), ("notes", 10)]
    assert seen(0) == everything
    assert seen(2) == everything[2:]  # seq == 2 itself is excluded
    assert seen(4) == everything[3:]  # a gap: the first event after it
    assert seen(9) == [("notes", 10)]
    assert seen(10) == [] and seen(99) == []
    assert store.events_after("r", 5)[0] == notes(2, 6)  # whole event dicts, every notes version
    assert store.events_after("nope", 0) == []


def test_events_after_uses_the_seq_indexes(store: SQLiteStore):
    plan = store._db.execute(
        """EXPLAIN QUERY PLAN SELECT seq, data FROM finals WHERE room = ?1 AND seq > ?2
           UNION ALL SELECT seq, data FROM notes WHERE room = ?1 AND seq > ?2
           UNION ALL SELECT seq, data FROM summaries WHERE room = ?1 AND seq > ?2 ORDER BY seq""",
        ("r", 0)).fetchall()
    details = [row[-1] for row in plan]
    assert not any(d.startswith("SCAN") for d in details), details
    assert any("finals_room_seq" in d for d in details) and any("notes_room_seq" in d for d in details)


# ---------------------------------------------------------------- two stores on one file


def test_a_second_store_sees_the_first_ones_writes(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    server, cli = SQLiteStore(path), SQLiteStore(path)
    try:
        assert cli.get_room("lecture") is None  # the CLI opened its store before the room existed
        server.add_room(RoomRecord("lecture", title="from the server"))
        assert cli.get_room("lecture") == RoomRecord("lecture", title="from the server")
        cli.add_room(RoomRecord("cli-room"))
        assert server.get_room("cli-room") == RoomRecord("cli-room")
        with pytest.raises(RoomExists):
            cli.add_room(RoomRecord("lecture"))
        server.save_final("lecture", final(0, 1), audio_s=1.0)
        assert cli.events_after("lecture", 0) == [final(0, 1)]
    finally:
        server.close()
        cli.close()


def test_writes_from_two_stores_and_many_threads_interleave(tmp_path: Path):
    path = str(tmp_path / "shared.db")
    stores = [SQLiteStore(path), SQLiteStore(path)]
    n, errors = 150, []

    def writer(store: SQLiteStore, room: str) -> None:
        try:
            for i in range(n):
                store.save_final(room, final(i, 2 * i + 1), audio_s=float(i))
                store.reserve_seq(room, i + 1000)
                if i % 10 == 0:
                    store.save_notes(room, notes(i, 2 * i + 2))
                    store.load_room(room)
                    store.list_rooms()
                    store.events_after(room, i - 5)
        except Exception as exc:  # collected for the main thread
            errors.append(exc)

    # two threads on each store: exercises the per-store lock and the cross-connection busy timeout
    threads = [threading.Thread(target=writer, args=(stores[k % 2], f"room{k}")) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        for k in range(4):
            state = stores[(k + 1) % 2].load_room(f"room{k}")  # read through the other store
            assert state is not None
            assert [f["id"] for f in state.finals] == list(range(n))
            assert state.record.seq_reserved == n - 1 + 1000
    finally:
        for s in stores:
            s.close()


# ---------------------------------------------------------------- durability


CHILD = """
import sys, time
from realtime.store import SQLiteStore
store = SQLiteStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.save_final("crash", {"type": "final", "seq": i + 1, "id": i, "start": float(i), "end": i + 0.5,
                               "text": f"Satz {i} – ä"}, audio_s=i + 0.5)
    print(i + 1, flush=True)
time.sleep(60)
"""


def test_every_reported_final_survives_sigkill(tmp_path: Path):
    path = tmp_path / "crash" / "realtime.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), "100000"], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=ROOT)
    assert child.stdout is not None
    reported = 0
    try:
        deadline = time.monotonic() + 60
        while reported < 300:  # kill it mid-stream, while it is still writing
            line = child.stdout.readline()
            assert line, f"child exited early with {child.poll()}"
            reported = int(line)
            assert time.monotonic() < deadline
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    for line in child.stdout.read().split():  # whatever it printed before it died
        reported = max(reported, int(line))
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL

    with SQLiteStore(str(path)) as s:
        state = s.load_room("crash")
        assert state is not None
        ids = [f["id"] for f in state.finals]
        # every reported final is there; at most one more (committed, killed before it printed)
        assert ids[:reported] == list(range(reported)) and len(ids) - reported in (0, 1), (reported, len(ids))
        assert state.finals[reported - 1]["text"] == f"Satz {reported - 1} – ä"
        assert state.record.seq_reserved == len(ids)
        assert state.record.audio_s == len(ids) - 0.5


def test_save_final_latency(tmp_path: Path):
    with SQLiteStore(str(tmp_path / "latency.db")) as s:
        s.add_room(RoomRecord("r"))
        n = 1000
        times = []
        for i in range(n):
            f = final(i, i + 1)
            t0 = time.perf_counter()
            s.save_final("r", f, audio_s=float(i))
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"\nsave_final on a tmp file: mean {sum(times) / n * 1e6:.0f} µs, median {times[n // 2] * 1e6:.0f} µs,"
              f" p99 {times[int(n * 0.99)] * 1e6:.0f} µs over {n} calls")
        assert len(s.load_room("r").finals) == n
