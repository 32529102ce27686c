"""PCM helpers: s16le bytes, int16 and float32 arrays, re-framing of arbitrary packets into fixed frames, and DC
removal."""

from __future__ import annotations

import math

import numpy as np

from realtime.core.protocol import BYTES_PER_SECOND, SAMPLE_RATE  # noqa: F401 (the audio code's constants too)


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


class DCBlocker:
    """Removes a constant offset from a stream (cheap USB microphones and sound cards have one). Both detectors
    of the VAD miss speech riding on a large offset (measured: none of a FLEURS clip was detected at +8000), so the
    offset, tracked as a running mean with time constant `tau_s`, is subtracted from every packet. Offsets under
    `floor` (-50 dBFS) are left alone, so ordinary audio passes bit for bit."""

    def __init__(self, tau_s: float = 0.5, floor: float = 100.0):
        self.tau_s = tau_s
        self.floor = floor
        self.dc: float | None = None

    def __call__(self, pcm: bytes) -> bytes:
        samples = pcm_to_int16(pcm)
        if not len(samples):
            return pcm
        mean = float(samples.mean())
        if self.dc is None:
            self.dc = mean
        else:
            self.dc += (1.0 - math.exp(-len(samples) / (self.tau_s * SAMPLE_RATE))) * (mean - self.dc)
        if abs(self.dc) < self.floor:
            return pcm
        return np.clip(samples - round(self.dc), -32768, 32767).astype("<i2").tobytes()
