"""Rooms with a transcript written straight into a database before a server starts, for tests of what the HTTP API
does with a lecture (streaming one through the model would take its length in time)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from realtime.core.access import hash_key, new_key
from realtime.storage.sqlite import RoomRecord, open_store

WORDS = ("the cell membrane controls what enters and leaves while proteins carry signals across it and "
         "enzymes speed up reactions that would otherwise take years in the body so energy from food is stored "
         "as ATP which the mitochondria produce through respiration").split()


@dataclass(frozen=True)
class Seeded:
    room: str
    speaker_key: str
    viewer_key: str | None


def final(i: int, start: float, text: str, seq: int) -> dict:
    words = text.split()
    step = 3.5 / max(1, len(words))
    return {"type": "final", "seq": seq, "id": i, "utterance": i, "start": round(start, 3),
            "end": round(start + step * len(words), 3), "text": text, "language": "en",
            "words": [{"w": w, "start": round(start + k * step, 3), "end": round(start + (k + 1) * step, 3),
                       "p": 0.9} for k, w in enumerate(words)]}


def seed_room(db: str, room: str, finals: int = 20, *, private: bool = False, ask: str = "anyone",
              texts: list[str] | None = None, seed: int = 7) -> Seeded:
    """A room with `finals` finals of about 4 s each (the given texts, cycled, or sentences of WORDS)."""
    rng = random.Random(seed)
    speaker_key, viewer_key = new_key("sk_"), new_key("vk_") if private else None
    with open_store(db) as store:
        store.add_room(RoomRecord(room, room.title(), time.time(), hash_key(speaker_key),
                                  hash_key(viewer_key) if viewer_key else None, ask=ask))
        t = 0.0
        for i in range(finals):
            text = texts[i % len(texts)] if texts else " ".join(rng.choice(WORDS) for _ in range(12)) + "."
            store.save_final(room, final(i, t, text, i + 1), t + 4)
            t += 4.0
    return Seeded(room, speaker_key, viewer_key)
