"""What every benchmark section shares: the lectures it plays, a server process it can measure, the record of the
hardware and versions that goes beside every figure, and a progress bar.

The lectures are built from the dev clips (REALTIME_TEST_AUDIO, as in the tests) so that each one has a reference
text for the WER and can be rebuilt bit for bit on any machine that has the same clips.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.speech import ROOT, SR, Clip, Lecture, english, load_clips, make_lecture

CACHE = ROOT / ".cache"
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`realtime serve` in a child process that the harness can measure (CPU seconds, peak RSS).

    Unlike the tests' fixture it leaves HF_HUB_OFFLINE alone, so `--model large-v3` may download on a connected
    machine, and it waits longer for a large model to load. Rooms open on first use (`--open-rooms`, as with
    `make serve`) unless the environment given sets REALTIME_OPEN_ROOMS=0 or an admin key.
    """

    def __init__(self, args: list[str], log_path: Path, ready_timeout: float = 900.0,
                 env: dict[str, str] | None = None, port: int | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        """`ssl_context`: the server serves TLS (`--tls-cert`): `url` and `http` are wss:// and https://, and
        readiness is checked with this client context."""
        self.args = args
        self.port = port or free_port()
        self.ssl_context = ssl_context
        secure = "s" if ssl_context is not None else ""
        self.url = f"ws{secure}://127.0.0.1:{self.port}"
        self.http = f"http{secure}://127.0.0.1:{self.port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # A fresh database of its own beside the log (rooms persist: a run must not inherit an earlier run's rooms),
        # unless the caller passes one (a restart test).
        fresh = str(log_path.with_suffix(".db"))
        env = {**os.environ, "REALTIME_CACHE_DIR": os.environ.get("REALTIME_CACHE_DIR", str(CACHE)),
               "REALTIME_DB": fresh, "REALTIME_OPEN_ROOMS": "1", **(env or {})}
        self.admin_key = env.get("REALTIME_ADMIN_KEY") or None  # /healthz details and /metrics need it
        self.db = env["REALTIME_DB"]
        if self.db == fresh:
            for suffix in ("", "-wal", "-shm"):
                Path(fresh + suffix).unlink(missing_ok=True)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "realtime", "serve", "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                self.health()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("server did not become ready") from None
                time.sleep(0.3)

    def get_json(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}
        request = urllib.request.Request(self.http + path, headers=headers)
        with urllib.request.urlopen(request, timeout=10, context=self.ssl_context) as r:
            return json.loads(r.read())

    def health(self) -> dict[str, Any]:
        return self.get_json("/healthz")

    def cpu_s(self) -> float:
        """User + system CPU seconds the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")

    def reset_peak_rss(self) -> None:
        """Restart VmHWM at the current RSS (Linux: 5 > /proc/PID/clear_refs), so each section reports its own."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


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
