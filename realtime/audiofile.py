"""Reading audio files for the client: any format PyAV (FFmpeg) decodes, resampled to 16 kHz mono s16le."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from realtime.core.audio import SAMPLE_RATE


def read_audio(path: str | Path) -> np.ndarray:
    """Decode a file to int16 samples at 16 kHz mono."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FileNotFoundError, FileNotFoundError):
        raise FileNotFoundError(f"no such audio file: {path}") from None
    except av.error.InvalidDataError:
        raise ValueError(f"not an audio file FFmpeg can read: {path}") from None
    with container:
        if not container.streams.audio:
            raise ValueError(f"{path} has no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
