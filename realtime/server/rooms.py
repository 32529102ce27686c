"""The rooms this process serves, and the asyncio side of a room: connection queues and the work done for it.

`realtime.core.room.Room` numbers, stores and fans out; here a `Connection` is the outbox a WebSocket's sender task
drains, and `Rooms` is the registry: rooms in memory while in use, loaded from the store on first use after a
start, released when idle, and deleted for good (their work cancelled and awaited first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator

from realtime.core.protocol import CLOSE_SLOW_LISTENER, SLOW_LISTENER
from realtime.core.records import RoomExists, RoomRecord, Store
from realtime.core.room import Room


class Connection:
    """One WebSocket's outbound side: the catch-up backlog of a joiner, then a bounded queue of live events, both
    drained by one sender task. The backlog (hello, the finals so far) is unbounded so that any room can be joined;
    only live events count against the queue limit."""

    def __init__(self, role: str, maxsize: int):
        self.role = role
        self.backlog: deque[str] = deque()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(max(1, maxsize))
        self.close_code: int | None = None
        self.close_reason = ""
        self.client = ""  # the client address whose connection slot this holds (ratelimit.ConnectionCounter)
        self.translate: str | None = None  # the caption language it gets `translation` events in (?translate=)

    def catch_up(self, texts: list[str]) -> None:
        self.backlog.extend(texts)

    def offer(self, text: str) -> bool:
        if self.close_code is not None:
            return False
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.close_code, self.close_reason = CLOSE_SLOW_LISTENER, SLOW_LISTENER
            self._wake_sender()
            return False

    def close(self, code: int, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._wake_sender()

    def _wake_sender(self) -> None:
        # Make room for the sentinel so the sender notices the close even when the queue is full.
        while True:
            try:
                self.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()


class Rooms:
    """The rooms this process serves: in memory while in use, loaded from the store on first use after a start.

    Other services keep a room in memory through `in_use` (the notes, while an update is due or under way)."""

    def __init__(self, store: Store | None = None):
        self._rooms: dict[str, Room] = {}
        self._tasks: dict[Room, set[asyncio.Task]] = {}
        self.store = store
        self.published: dict[str, int] = {}  # events by type over all rooms, for /metrics
        self.store_errors = 0  # of rooms no longer in memory
        self.in_use: list[Callable[[Room], bool]] = []

    def _add(self, room: Room) -> Room:
        room.published = self.published
        room.on_gone.append(lambda: self._cancel(room))
        self._rooms[room.name] = room
        return room

    def get(self, name: str) -> Room:
        """The room, made now (keyless, and stored) if it exists nowhere: for callers that already decided it may be
        made (an open room of the loopback quick start)."""
        room = self.find(name)
        if room is None:
            record = RoomRecord(name, created_at=time.time())
            if self.store is not None:
                with contextlib.suppress(RoomExists):  # made meanwhile by `realtime room create`: load that one
                    self.store.add_room(record)
                room = self.find(name)
            room = room or self._add(Room(name, self.store, record))
        return room

    def find(self, name: str) -> Room | None:
        room = self._rooms.get(name)
        if room is None and self.store is not None:
            state = self.store.load_room(name)
            if state is not None:
                room = self._add(Room.restore(state, self.store))
        return room

    def track(self, room: Room, task: asyncio.Task) -> asyncio.Task:
        """Work on behalf of `room` that a delete must cancel (a notes update, a summary, a question)."""
        tasks = self._tasks.setdefault(room, set())
        tasks.add(task)
        task.add_done_callback(lambda t: self._done(room, t))
        return task

    def _done(self, room: Room, task: asyncio.Task) -> None:
        tasks = self._tasks.get(room)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self._tasks[room]

    def tasks(self, room: Room) -> set[asyncio.Task]:
        return set(self._tasks.get(room, ()))

    def _cancel(self, room: Room) -> None:
        for task in self.tasks(room):
            if task is not asyncio.current_task():
                task.cancel()

    async def cancel_all(self, grace_s: float = 5.0) -> None:
        """At shutdown: cancel the work of every room and wait for it (a cancelled LLM call still records what it
        cost), so that none of it runs on after the store is closed."""
        pending = [t for tasks in self._tasks.values() for t in tasks if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace_s)

    async def delete(self, name: str, grace_s: float = 5.0) -> bool:
        """Delete a room for good: nothing it still has in flight may publish into it or write it back. Its work is
        cancelled and awaited before the store forgets it. False when it exists nowhere."""
        room = self._rooms.get(name)
        if room is not None:
            room.gone()
            pending = [t for t in self.tasks(room) if t is not asyncio.current_task()]
            if pending:
                await asyncio.wait(pending, timeout=grace_s)
            self.forget(name)
        found = self.store.delete_room(name) if self.store is not None else room is not None
        return found or room is not None

    def release(self, room: Room) -> bool:
        """Forget a room nobody uses (the store has it): memory stays bounded however many rooms are visited."""
        busy = room.connections or room.session or room in self._tasks or any(f(room) for f in self.in_use)
        if busy or self._rooms.get(room.name) is not room:
            return False
        self.forget(room.name)
        return True

    def sweep(self, now: float, idle_s: float) -> int:
        """Release the rooms that were only read (over HTTP) and have not been touched for `idle_s`."""
        released = 0
        for room in list(self._rooms.values()):
            if now - room.used_at >= idle_s and self.release(room):
                released += 1
        return released

    def forget(self, name: str) -> Room | None:
        room = self._rooms.pop(name, None)
        if room is not None:
            self.store_errors += room.store_errors
        return room

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)
