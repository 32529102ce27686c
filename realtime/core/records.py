"""What a room is on disk, independent of the engine that keeps it: its record, what a restart needs, the store's
interface and its errors. The core (`room.py`) and every store backend share these; none of them does I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

ASK_POLICIES = ("anyone", "viewers", "nobody")  # who may ask questions: everyone, holders of a room key, no one
TOKEN_POOLS = ("notes", "visitors", "translation")  # a room's LLM spend: its notes and summaries, its visitors'
# questions, and its caption translations


@dataclass
class RoomRecord:
    name: str
    title: str = ""
    created_at: float = 0.0
    speaker_key_hash: str | None = None  # None: an open room, anyone may speak
    viewer_key_hash: str | None = None  # None: a public room, anyone may listen
    seq_reserved: int = 0  # seqs up to this may have been used; a restarted room continues after it
    audio_s: float = 0.0  # lecture time so far
    glossary: str = ""
    ask: str = "anyone"  # who may ask questions, one of ASK_POLICIES
    llm_tokens_notes: int = 0  # LLM tokens spent on the room's notes and summaries
    llm_tokens_visitors: int = 0  # LLM tokens spent answering its visitors' questions
    llm_tokens_translation: int = 0  # LLM tokens spent translating its captions


@dataclass
class RoomState:
    """What a restart needs to bring a room back."""

    record: RoomRecord
    finals: list[dict[str, Any]]  # in id order
    notes: dict[str, Any] | None  # the latest notes event, or None
    summary: dict[str, Any] | None  # the latest summary event, or None
    translations: list[dict[str, Any]] = field(default_factory=list)  # translation events, in seq order
    panels: list[dict[str, Any]] = field(default_factory=list)  # the latest panel event of each study panel


class RoomExists(Exception):
    """add_room: a room of that name is already stored."""


class RoomGone(LookupError):
    """A room-scoped write found no room of that name (never made, or deleted, perhaps by another process); it wrote
    nothing. The caller should treat the room as deleted rather than bring it back."""


@runtime_checkable
class Store(Protocol):
    def add_room(self, record: RoomRecord) -> None: ...
    def get_room(self, name: str) -> RoomRecord | None: ...
    def list_rooms(self) -> list[RoomRecord]: ...
    def delete_room(self, name: str) -> bool: ...
    def load_room(self, name: str) -> RoomState | None: ...
    def save_final(self, room: str, final: dict[str, Any], audio_s: float) -> None: ...
    def save_notes(self, room: str, notes: dict[str, Any]) -> None: ...
    def save_summary(self, room: str, summary: dict[str, Any]) -> None: ...
    def save_translation(self, room: str, translation: dict[str, Any]) -> None: ...
    def save_panel(self, room: str, panel: dict[str, Any]) -> None: ...
    def save_progress(self, room: str, audio_s: float, glossary: str | None = None) -> None: ...
    def reserve_seq(self, room: str, upto: int) -> None: ...
    def set_ask(self, room: str, ask: str) -> None: ...
    def add_llm_tokens(self, room: str, pool: str, tokens: int) -> None: ...
    def add_daily_tokens(self, day: str, tokens: int) -> int: ...
    def daily_tokens(self, day: str) -> int: ...
    def events_after(self, room: str, seq: int) -> list[dict[str, Any]]: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def close(self) -> None: ...
