"""The notes of one lecture as versioned bullets, and the change from one version to the next (sans-I/O).

A notes engine proposes either a complete list of bullets (the extractive engine) or edits to the current ones (the
LLM: `Op`s, applied by `apply_ops`); `NotesState.apply` keeps bullets whose content did not change untouched,
numbers the new version, and reports what was added, changed and removed, so clients patch instead of re-rendering
and a bullet is only rewritten when its content changes. Invalid proposals are rejected whole, with a reason code
(`InvalidNotes.reason`, one of `REJECTIONS`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_BULLETS = 200  # a three-hour lecture's notes; the LLM sees only the latest ones (prompt.EDITABLE_BULLETS)
MAX_TEXT = 400
MAX_OPS = 40  # in one answer

# Why an answer was rejected: no JSON object in it; the wrong shape or types; an id (update, remove, parent) that is
# not a bullet; refs to segments that do not exist; an empty or an over-long bullet; more bullets or ops than
# allowed; two bullets with one id; the answer cut off at max_tokens (finish_reason "length").
REJECTIONS = ("not_json", "bad_structure", "unknown_id", "bad_refs", "empty", "too_long", "too_many", "duplicate_id",
              "length", "empties")
_NUMBERED = re.compile(r"b(\d{1,9})")


@dataclass(frozen=True)
class Bullet:
    id: str
    text: str  # Markdown (emphasis for key terms)
    refs: tuple[int, ...] = ()  # final segment ids the bullet came from
    parent: str | None = None  # a sub-point of this bullet

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["refs"] = list(self.refs)
        return d


@dataclass(frozen=True)
class Op:
    """One edit of the notes. `add`: a new bullet (its id is ours: the next free b<N>; `id`, when the model names
    the new bullet anyway, is an alias later ops of the same answer may use); `update`: new text for bullet `id`,
    its `refs` joining the bullet's own; `remove`: bullet `id` goes, its sub-points move up to its parent."""

    kind: str  # "add", "update" or "remove"
    id: str | None = None
    text: str = ""
    refs: tuple[int, ...] = ()
    parent: str | None = None


@dataclass(frozen=True)
class NotesChange:
    version: int
    source: str
    bullets: list[Bullet]
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class InvalidNotes(ValueError):
    """A proposal that would corrupt the notes; the current version stays. `reason` is one of REJECTIONS."""

    def __init__(self, message: str, reason: str = "bad_structure"):
        super().__init__(message)
        self.reason = reason


def validate(bullets: list[Bullet], known_segments: int) -> None:
    if len(bullets) > MAX_BULLETS:
        raise InvalidNotes(f"more than {MAX_BULLETS} bullets", "too_many")
    ids = [b.id for b in bullets]
    if len(set(ids)) != len(ids):
        raise InvalidNotes("duplicate bullet ids", "duplicate_id")
    for b in bullets:
        if not b.id or not b.text.strip():
            raise InvalidNotes(f"bullet {b.id!r} is empty", "empty")
        if len(b.text) > MAX_TEXT:
            raise InvalidNotes(f"bullet {b.id!r} is too long", "too_long")
        if b.parent is not None and (b.parent not in ids or b.parent == b.id):
            raise InvalidNotes(f"bullet {b.id!r} has an unknown parent", "unknown_id")
        if any(not 0 <= r < known_segments for r in b.refs):
            raise InvalidNotes(f"bullet {b.id!r} cites a segment that does not exist", "bad_refs")


def number_of(ident: str) -> int:
    """N of an id b<N>; 0 for any other id."""
    m = _NUMBERED.fullmatch(ident)
    return int(m.group(1)) if m else 0


def apply_ops(bullets: list[Bullet], ops: list[Op], next_number: int) -> list[Bullet]:
    """The bullets after `ops`, in display order (an added sub-point goes after its parent's last sub-point, any
    other addition at the end). New bullets are numbered b<next_number>, b<next_number + 1>, ... Raises InvalidNotes
    (`unknown_id`, `too_many`) for an op on a bullet that does not exist; `validate` does the rest."""
    if len(ops) > MAX_OPS:
        raise InvalidNotes(f"more than {MAX_OPS} ops", "too_many")
    current = list(bullets)
    alias: dict[str, str] = {}

    def find(ident: str | None, what: str) -> int:
        ident = alias.get(ident or "", ident)
        for i, b in enumerate(current):
            if b.id == ident:
                return i
        raise InvalidNotes(f"{what} names bullet {ident!r}, which does not exist", "unknown_id")

    number = max(next_number, 1)
    for op in ops:
        if op.kind == "add":
            parent = current[find(op.parent, "a parent")].id if op.parent is not None else None
            bullet = Bullet(f"b{number}", op.text, op.refs, parent)
            number += 1
            if op.id and op.id not in alias and all(b.id != op.id for b in current):
                alias[op.id] = bullet.id
            current.insert(_after_subtree(current, parent), bullet)
        elif op.kind == "update":
            i = find(op.id, "an update")
            old = current[i]
            current[i] = Bullet(old.id, op.text or old.text, tuple(dict.fromkeys(old.refs + op.refs)), old.parent)
        elif op.kind == "remove":
            i = find(op.id, "a remove")
            gone = current.pop(i)
            current = [Bullet(b.id, b.text, b.refs, gone.parent) if b.parent == gone.id else b for b in current]
        else:
            raise InvalidNotes(f"unknown op {op.kind!r}")
    return current


def _after_subtree(bullets: list[Bullet], parent: str | None) -> int:
    """Where a new child of `parent` goes: after the parent's descendants that follow it (the end for no parent)."""
    if parent is None:
        return len(bullets)
    parents = {b.id: b.parent for b in bullets}

    def under(ident: str | None) -> bool:
        for _ in range(len(parents) + 1):  # a bound, should a stored list hold a parent cycle
            if ident is None:
                return False
            if ident == parent:
                return True
            ident = parents.get(ident)
        return False

    i = next(i for i, b in enumerate(bullets) if b.id == parent) + 1
    while i < len(bullets) and under(bullets[i].parent):
        i += 1
    return i


class NotesState:
    def __init__(self) -> None:
        self.version = 0
        self.source = ""
        self.bullets: list[Bullet] = []
        self._numbered = 0  # the highest b<N> ever in the notes: a removed bullet's id is not given out again

    @classmethod
    def from_event(cls, data: dict[str, Any]) -> NotesState:
        """The state a stored `notes` event describes (a restart brings the room's notes back from it)."""
        state = cls()
        state.version, state.source = int(data["version"]), str(data["source"])
        state.bullets = [Bullet(b["id"], b["text"], tuple(b.get("refs") or ()), b.get("parent"))
                         for b in data["bullets"]]
        return state

    def next_number(self) -> int:
        """N of the id the next added bullet gets (b<N>)."""
        return max([self._numbered, *(number_of(b.id) for b in self.bullets)]) + 1

    def apply(self, proposal: list[Bullet], source: str, known_segments: int) -> NotesChange | None:
        """Adopt a proposal; None when nothing changed. Raises InvalidNotes and keeps the current notes."""
        validate(proposal, known_segments)
        old = {b.id: b for b in self.bullets}
        new_ids = {b.id for b in proposal}
        added = [b.id for b in proposal if b.id not in old]
        changed = [b.id for b in proposal if b.id in old and old[b.id] != b]
        removed = [i for i in old if i not in new_ids]
        if not (added or changed or removed) and [b.id for b in proposal] == [b.id for b in self.bullets]:
            return None
        self._numbered = self.next_number() - 1  # the ids of the bullets about to go stay taken
        self.version += 1
        self.source = source
        self.bullets = list(proposal)
        return NotesChange(self.version, source, list(self.bullets), added, changed, removed)

    def apply_ops(self, ops: list[Op], source: str, known_segments: int, *,
                  base: list[Bullet] | None = None) -> NotesChange | None:
        """Apply edits to the current bullets (or to `base`: [] when the LLM starts over from extractive notes).
        Edits that would leave no bullet at all are refused (`empties`): blank notes in the middle of a lecture help
        nobody, and a small model did it (the bundled 0.5B removed the only bullet of a streamed lecture)."""
        start = self.bullets if base is None else base
        proposal = apply_ops(start, ops, self.next_number())
        if start and not proposal:
            raise InvalidNotes("the edits would remove every bullet", "empties")
        return self.apply(proposal, source, known_segments)
