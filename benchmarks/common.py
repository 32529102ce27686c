"""What every benchmark section shares: the lectures it plays, the record of the hardware and versions that goes
beside every figure, and a progress bar. The server process it measures (Server) is testbed.server's, shared with
the tests.

The lectures are built from the dev clips (REALTIME_TEST_AUDIO, as in the tests) so that each one has a reference
text for the WER and can be rebuilt bit for bit on any machine that has the same clips.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from testbed import ROOT
from testbed.server import CACHE
from testbed.speech import SR, Clip, Lecture, english, load_clips, make_lecture

RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Bench:
    """A lecture to play and the reference text its WER is computed against."""

    name: str
    lecture: Lecture

    @property
    def audio_s(self) -> float:
        return len(self.lecture.audio) / SR

    @property
    def reference(self) -> str:
        return " ".join(c.reference for c in self.lecture.clips)


def dev_clips() -> list[Clip]:
    return english(load_clips(CACHE / "synth-speech"))


def dev_lecture(quick: bool = False) -> Bench:
    """The dev lecture: the English clips joined by 1-3 s of -55 dBFS noise (64 s); `quick`: the shortest clip of
    5 s or more (on the 4 s one base commits a wrong opening, which makes a confusing smoke figure)."""
    clips = dev_clips()
    if quick:
        long_enough = [c for c in clips if c.samples().size >= 5 * SR] or clips
        shortest = min(long_enough, key=lambda c: c.samples().size)
        return Bench("quick", make_lecture([shortest], lead_s=1.0))
    return Bench("dev", make_lecture(clips))


def long_utterances() -> Bench:
    """The dev clips in pairs, each pair joined by 0.1 s (far under the VAD's 0.5 s hangover) into one utterance of
    10-23 s, the pairs 1.5-2.5 s apart: long sentences, where the last words wait longest for their final and
    utterances reach `--max-utterance-s`."""
    clips = sorted(dev_clips(), key=lambda c: -c.samples().size)
    order = [c for pair in zip(clips[0::2], clips[1::2], strict=False) for c in pair]
    gaps = [0.1 if i % 2 == 0 else 1.5 + (i % 3) * 0.5 for i in range(len(order))]
    return Bench("long-utterances", make_lecture(order, gaps=gaps))


def long_lecture(minutes: float) -> Bench:
    """The dev clips repeated, joined by 1-3 s of noise, until the lecture lasts at least `minutes`."""
    clips = dev_clips()
    one = sum(c.samples().size for c in clips) / SR + 2.0 * len(clips)
    repeats = max(1, int(minutes * 60 / one) + 1)
    lecture = make_lecture(clips * repeats, seed=11)
    while len(lecture.audio) / SR < minutes * 60:
        repeats += 1
        lecture = make_lecture(clips * repeats, seed=11)
    return Bench(f"long-{minutes:g}min", lecture)


def environment() -> dict[str, Any]:
    """Hardware, versions and date: recorded beside every figure, since latency depends on all three."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gb = None
    gpu = None
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10)
            gpu = out.stdout.strip() or "cuda"
    except Exception:
        pass

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
        "gpu": gpu, "python": platform.python_version(), "faster_whisper": version("faster-whisper"),
        "ctranslate2": version("ctranslate2"), "realtime": version("realtime-lecture"),
    }


def progress(total_s: float, desc: str) -> Any:
    """A progress bar over seconds of audio (tqdm; silent when stderr is not a terminal or tqdm is missing)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=round(total_s, 1), desc=desc, unit="s", disable=None, leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")


class _NoBar:
    n = 0.0

    def update(self, n: float) -> None:
        self.n += n

    def close(self) -> None:
        pass


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
