"""PCM helpers: s16le bytes, int16 and float32 arrays, and re-framing of arbitrary packets into fixed frames."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def pcm_to_int16(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


class Reframer:
    """Cuts a byte stream of any packet sizes into frames of exactly `frame_bytes`, keeping the remainder."""

    def __init__(self, frame_bytes: int):
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._pending += data
        n = len(self._pending) // self.frame_bytes
        frames = [bytes(self._pending[i * self.frame_bytes:(i + 1) * self.frame_bytes]) for i in range(n)]
        del self._pending[:n * self.frame_bytes]
        return frames

    def flush(self) -> bytes | None:
        """The incomplete last frame, zero-padded, or None."""
        if not self._pending:
            return None
        frame = bytes(self._pending) + b"\0" * (self.frame_bytes - len(self._pending))
        self._pending.clear()
        return frame
