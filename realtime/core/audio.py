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


# ---------------------------------------------------------------- other rates and G.711 (the OpenAI Realtime input)
# OpenAI Realtime clients send 24 kHz PCM or 8 kHz G.711; the pipeline runs at 16 kHz. Python 3.13 removed
# `audioop`, so the codecs are tables in numpy and the resampler is a polyphase windowed-sinc filter.


def _ulaw_table() -> np.ndarray:
    """ITU-T G.711 μ-law: the 256 codes' linear values (14-bit range scaled to 16 bits), by the standard's formula."""
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent, mantissa = (codes >> 4) & 0x07, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """ITU-T G.711 A-law: the 256 codes' linear values (13-bit range scaled to 16 bits)."""
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent, mantissa = (codes >> 4) & 0x07, codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


ULAW_TABLE = _ulaw_table()
ALAW_TABLE = _alaw_table()


def ulaw_decode(data: bytes) -> np.ndarray:
    return ULAW_TABLE[np.frombuffer(data, np.uint8)]


def alaw_decode(data: bytes) -> np.ndarray:
    return ALAW_TABLE[np.frombuffer(data, np.uint8)]


def _g711_encode(samples: np.ndarray, table: np.ndarray) -> bytes:
    """The code whose value is nearest each sample (what an encoder's segment search computes); for tests and
    for clients written in Python."""
    order = np.argsort(table, kind="stable")
    values = table[order].astype(np.int32)
    x = np.asarray(samples, np.int32)
    i = np.clip(np.searchsorted(values, x), 1, len(values) - 1)
    nearer = np.where(np.abs(values[i - 1] - x) <= np.abs(values[i] - x), i - 1, i)
    return order[nearer].astype(np.uint8).tobytes()


def ulaw_encode(samples: np.ndarray) -> bytes:
    return _g711_encode(samples, ULAW_TABLE)


def alaw_encode(samples: np.ndarray) -> bytes:
    return _g711_encode(samples, ALAW_TABLE)


class Resampler:
    """Streaming rational resampler (`rate_out/rate_in` = up/down): a Kaiser-windowed sinc low-pass at the lower
    Nyquist rate, applied in polyphase form so only the needed output samples are computed. Packets of any size go
    in; state carries across them, so the result does not depend on how the stream was cut. The filter's delay is
    (taps - 1) / 2 input samples (0.6 ms at 24 kHz), far under a VAD frame."""

    def __init__(self, rate_in: int, rate_out: int, taps_per_phase: int = 32, beta: float = 8.0):
        g = math.gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        self.taps = taps_per_phase
        n = taps_per_phase * self.up
        cutoff = 0.5 / max(self.up, self.down) * 0.9  # cycles per sample at the upsampled rate; 10 % transition
        t = np.arange(n) - (n - 1) / 2
        h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, beta)
        h *= self.up / h.sum()  # unity gain at DC after zero-stuffing
        # phases[p, j] = h[p + j * up]: output at upsampled index m uses phase m % up on inputs m // up - j.
        self.phases = h.reshape(self.taps, self.up).T.copy()
        self._history = np.zeros(self.taps - 1)  # the last inputs, before the stream: silence
        self._n_in = 0  # inputs received
        self._k = 0  # next output index

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Int16 (or float) samples at rate_in in; int16 samples at rate_out out."""
        if self.up == self.down:
            return np.asarray(samples, np.int16)
        buf = np.concatenate([self._history, np.asarray(samples, np.float64)])
        first = self._n_in - len(self._history)  # global index of buf[0]
        self._n_in += len(samples)
        k_end = (self._n_in * self.up + self.down - 1) // self.down  # outputs whose newest input has arrived
        ks = np.arange(self._k, k_end)
        self._k = max(self._k, k_end)
        self._history = buf[len(buf) - (self.taps - 1):] if len(buf) >= self.taps - 1 else buf
        if not len(ks):
            return np.zeros(0, np.int16)
        m = ks * self.down
        newest = m // self.up - first
        window = buf[newest[:, None] - np.arange(self.taps)[None, :]]
        y = np.einsum("ij,ij->i", window, self.phases[m % self.up])
        return np.clip(np.round(y), -32768, 32767).astype(np.int16)
