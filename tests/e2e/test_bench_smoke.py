"""A smoke run of the benchmark harness (`python -m benchmarks.run --quick`): a few seconds of audio through a real
server and the real model, every section, and the report. It checks that the harness works end to end, not the
figures (benchmarks/README.md has those)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.speech import ROOT

pytestmark = pytest.mark.slow


def test_quick_benchmark_run(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "results"
    env = {**os.environ, "REALTIME_CACHE_DIR": str(cache_dir)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    print(f"\nbenchmark smoke run: {elapsed:.1f} s\n{proc.stdout}")

    stream = json.loads(next(out.glob("stream-*.json")).read_text())
    assert stream["env"]["cores"] and stream["env"]["faster_whisper"] and stream["env"]["date"]
    assert stream["offline"]["per_clip"]["wer"] < 0.3 and stream["offline"]["whole_file"]["rtf"] > 0
    lat = stream["stream"]["latency"]
    assert lat["matched_words"] > 0 and 0 < lat["committed"]["median"] < 10
    assert lat["first_seen"]["median"] <= lat["committed"]["median"]
    assert stream["naive"]["latency"]["matched_words"] > 0
    assert stream["stream"]["peak_rss_mb"] > 50 and stream["stream"]["server_cpu_s"] > 0

    capacity = json.loads(next(out.glob("capacity-*.json")).read_text())["capacity"]
    assert [r["n"] for r in capacity["rows"]] == [1, 2]
    assert all(r["refused"] == 0 and r["matched_words"] > 0 for r in capacity["rows"])

    fanout = json.loads(next(out.glob("fanout-*.json")).read_text())["fanout"]
    assert fanout["listeners"] == 20 and fanout["missed"] == 0 and fanout["slow_closed"] == 0
    assert fanout["deliveries"] == 20 * fanout["events"] > 0

    md = (out / "results.md").read_text()
    assert "## Latency and accuracy" in md and "## Capacity" in md and "## Fan-out" in md
    if importlib.util.find_spec("matplotlib"):
        assert (out / "latency-cdf.png").stat().st_size > 1000 and (out / "capacity.png").is_file()
