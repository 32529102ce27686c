"""Fan-out delivery and lag metrics of the benchmark harness, and its report, on hand-made inputs."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report
from benchmarks.align import WordTiming
from benchmarks.fanout import summarise
from benchmarks.stream import lag_report

SPEAKER = [{"type": "hello", "seq": 0}, {"type": "status", "seq": 1}, {"type": "partial", "seq": 2},
           {"type": "final", "seq": 3}, {"type": "pong", "seq": 3}, {"type": "status", "seq": 4}]


def test_fanout_counts_missed_events_and_measures_spread_from_first_receipt() -> None:
    speaker_t = {1: 10.0, 2: 11.0, 3: 12.0, 4: 13.0}
    records = [
        {"hello": 0, "seq": [1, 2, 3, 4], "t": [10.001, 10.999, 12.002, 13.004], "close": 1000},
        {"hello": 0, "seq": [1, 3, 4], "t": [10.003, 12.010, 13.001], "close": 4408},  # missed seq 2
        {"hello": 2, "seq": [3, 4], "t": [12.000, 13.000], "close": 1000},  # joined late: owes only 3 and 4
    ]
    out = summarise(SPEAKER, speaker_t, records)
    assert out["events"] == 4 and out["deliveries"] == 9 and out["missed"] == 1 and out["slow_closed"] == 1
    # seq 2 was first received by listener 0 at 10.999, before the speaker: the spread is from that.
    delays = sorted([1, 0, 2, 4, 3, 10, 1, 0, 0])
    assert out["delivery_ms"]["max"] == 10.0
    assert out["delivery_ms"]["p50"] == float(delays[4])


def timing(end: float, latency: float) -> WordTiming:
    return WordTiming("w", 0, end, end + latency / 2, end + latency)


def test_lag_report_flags_growing_latency() -> None:
    steady = [timing(t, 1.0 + 0.1 * (t % 2)) for t in range(0, 600, 5)]
    growing = [timing(t, 1.0 + t / 100) for t in range(0, 600, 5)]
    events = [{"type": "status", "state": "live", "t": 2.0, "audio_s": 2.0, "lag_s": 0.4},
              {"type": "status", "state": "live", "t": 4.0, "audio_s": 4.0, "lag_s": 1.2}]
    ok = lag_report(events, steady)
    assert ok["bounded"] and abs(ok["committed_trend_s_per_10min"]) < 0.1 and ok["server_lag_max_s"] == 1.2
    bad = lag_report(events, growing)
    assert not bad["bounded"] and bad["committed_trend_s_per_10min"] == 6.0
    assert len(bad["committed_p95_by_quarter"]) == 4


def test_report_builds_markdown_from_result_files(tmp_path: Path) -> None:
    env = {"date": "2026-11-23", "cpu": "test cpu", "cores": 2, "memory_gb": 24, "gpu": None, "python": "3.11",
           "faster_whisper": "1", "ctranslate2": "4", "realtime": "0.1.0"}
    lat = {"n": 3, "mean": 1.0, "median": 0.9, "p90": 1.5, "p95": 1.6, "max": 2.0}
    head = {"label": "base-cpu-int8", "truth_model": "base", "lecture": "dev", "audio_s": 64.0, "env": env}
    rows = [{"n": n, "refused": 0, "wer_mean": 0.1, "committed": {**lat, "p95": 1.0 * n}, "first_seen": lat,
             "final_delay": lat, "server_lag_max_s": 0.5, "server_cores": 1.5} for n in (1, 2, 4)]
    (tmp_path / "capacity-base.json").write_text(json.dumps(
        {**head, "section": "capacity",
         "capacity": {"rows": rows, "target_p95_s": 2.5, "max_n_under_target": 2, "audio_s": 64.0}}))
    (tmp_path / "fanout-base.json").write_text(json.dumps(
        {**head, "section": "fanout",
         "fanout": {"listeners": 1000, "events": 10, "deliveries": 10000, "missed": 0, "slow_closed": 0,
                    "delivery_ms": {"p50": 1.0, "p99": 5.0, "max": 9.0}, "server_cores": 1.2, "peak_rss_mb": 400}}))
    (tmp_path / "not-a-result.json").write_text("[]")
    md = report.build(tmp_path).read_text()
    assert "largest N with p95 < 2.5 s: 2" in md
    assert "| base-cpu-int8 | 1000 | 10 | 10000 | 0 | 0 | 1.0 / 5.0 / 9.0 |" in md
    assert "2026-11-23, 2-core test cpu" in md
    assert "## Latency and accuracy" not in md  # no stream results: no empty table
