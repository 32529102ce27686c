"""results.md from every result JSON in the output folder, with hardware, versions and date beside each table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import plots


def load(out: Path) -> dict[str, list[dict[str, Any]]]:
    by_section: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "section" in data:
            by_section.setdefault(data["section"], []).append(data)
    return by_section


def env_line(r: dict[str, Any]) -> str:
    e = r["env"]
    hw = f"{e['cores']}-core {e['cpu']}, {e['memory_gb']} GB" + (f", GPU {e['gpu']}" if e.get("gpu") else ", no GPU")
    return (f"{r['label']}: {e['date']}, {hw}; faster-whisper {e['faster_whisper']}, ctranslate2 {e['ctranslate2']}, "
            f"Python {e['python']}; truth: {r['truth_model']} per clip; lecture {r['lecture']} ({r['audio_s']} s)")


def _lat(s: dict[str, Any], keys: tuple[str, ...] = ("mean", "median", "p90", "p95", "max")) -> str:
    return " / ".join(f"{s[k]:.2f}" for k in keys)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + \
        ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def stream_table(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        s, lat = r["stream"], r["stream"].get("latency")
        if lat:
            rows.append([f"{r['label']} streamed", s["wer"], _lat(lat["committed"]),
                         _lat(lat["first_seen"], ("median", "p95")), _lat(lat["final_delay"], ("median", "p95")),
                         f"{lat['matched_words']}/{lat['truth_words']}", s["decode_rtf"], s["server_cores"],
                         s["peak_rss_mb"]])
        n = r["naive"]
        rows.append([f"{r['label']} naive {n['chunk_s']:g} s chunks", n["wer"], _lat(n["latency"]["committed"]),
                     "= committed", _lat(n["latency"]["final_delay"], ("median", "p95")),
                     f"{n['latency']['matched_words']}/{n['latency']['truth_words']}", n["rtf"], "", ""])
        for key, what in (("per_clip", "offline clip by clip"), ("whole_file", "offline whole file")):
            o = r["offline"].get(key)
            if o:
                rows.append([f"{r['label']} {what}", o["wer"], "", "", "", "", o["rtf"], "", ""])
        if "fast" in r:
            f = r["fast"]
            rows.append([f"{r['label']} as fast as possible", f["wer"], "", "", "", "",
                         f"{f['rtf']} (wall)", f["server_cores"], f["peak_rss_mb"]])
    head = ["configuration", "WER", "word → committed mean / median / p90 / p95 / max (s)",
            "word → first seen median / p95", "speech end → final median / p95", "words timed", "RTF",
            "server CPU cores", "peak RSS MB"]
    return _table(head, rows)


def long_table(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        s = r["long"]
        lag = s["lag"]
        rows.append([r["label"], f"{s['audio_s'] / 60:.1f} min", s["wer"], _lat(s["latency"]["committed"]),
                     " / ".join(f"{q:.2f}" for q in lag["committed_p95_by_quarter"]),
                     lag["committed_trend_s_per_10min"], lag["server_lag_max_s"], "yes" if lag["bounded"] else "NO",
                     s["server_cores"], s["peak_rss_mb"]])
    head = ["configuration", "length", "WER", "word → committed mean / median / p90 / p95 / max (s)",
            "p95 by quarter (s)", "trend (s per 10 min)", "server lag max (s)", "bounded", "server CPU cores",
            "peak RSS MB"]
    return _table(head, rows)


def capacity_table(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        c = r["capacity"]
        for row in c["rows"]:
            rows.append([r["label"], row["n"], _lat(row["committed"], ("median", "p95", "max")),
                         row["first_seen"]["median"], row["final_delay"]["median"], row["server_lag_max_s"],
                         row["wer_mean"], row["refused"], row["server_cores"]])
        rows.append([r["label"], f"**largest N with p95 < {c['target_p95_s']} s: {c['max_n_under_target']}**",
                     "", "", "", "", "", "", ""])
    head = ["configuration", "N", "word → committed median / p95 / max (s)", "first seen median",
            "speech end → final median", "server lag max (s)", "WER mean", "refused", "server CPU cores"]
    return _table(head, rows)


def fanout_table(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in results:
        f = r["fanout"]
        d = f["delivery_ms"]
        rows.append([r["label"], f["listeners"], f["events"], f["deliveries"], f["missed"], f["slow_closed"],
                     f"{d['p50']} / {d['p99']} / {d['max']}", f["server_cores"], f["peak_rss_mb"]])
    head = ["configuration", "listeners", "room events", "deliveries", "missed", "closed as slow",
            "delivery spread p50 / p99 / max (ms)", "server CPU cores", "peak RSS MB"]
    return _table(head, rows)


def overload_table(results: list[dict[str, Any]]) -> list[str]:
    rows = []
    what = {"alone": "alone", "flood": "beside refused speakers, a junk flood and a listener that never reads",
            "abuser": "beside a speaker sending at 10x", "both": "beside all of them"}
    for r in results:
        o = r["overload"]
        for key, label in what.items():
            a = o[key]
            extra = []
            if "abuser" in a:
                extra.append(f"abuser taken at {a['abuser']['effective_rate']}x")
            if "attempts" in a:
                extra.append(f"{a['server_full']}/{a['attempts']} extra speakers refused, "
                             f"{a['junk_answered']} junk messages answered")
            rows.append([r["label"], label, _lat(a["committed"], ("median", "p95", "max")), a["first_seen"]["median"],
                         a["wer"], a["lag_max_s"], "; ".join(extra)])
    head = ["configuration", "admitted speaker", "word → committed median / p95 / max (s)", "first seen median",
            "WER", "server lag max (s)", "abusers"]
    return _table(head, rows)


def build(out: Path) -> Path:
    """Write results.md (and the plots) from the JSONs in `out`; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    by_section = load(out)
    pngs = plots.draw(by_section, out)
    lines = ["# Benchmark results", "", "Written by `python -m benchmarks.run`; method in benchmarks/README.md. "
             "Latencies are computation-aware at 1.0x real time, against per-clip offline word timings.", ""]
    for name, title, fn in (("stream", "Latency and accuracy", stream_table), ("long", "Long stream", long_table),
                            ("capacity", "Capacity", capacity_table), ("fanout", "Fan-out", fanout_table),
                            ("overload", "Overload", overload_table)):
        results = by_section.get(name)
        if not results:
            continue
        lines += [f"## {title}", "", *fn(results), ""]
        lines += [f"- {env_line(r)}" for r in results] + [""]
    if pngs:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    md = out / "results.md"
    md.write_text("\n".join(lines))
    return md


def one_line(r: dict[str, Any]) -> str:
    """A progress line for the terminal after each section."""
    name = r["section"]
    if name in ("stream", "long") and r.get(name, {}).get("latency"):
        s = r[name]
        c = s["latency"]["committed"]
        return (f"{name} {r['label']}: WER {s['wer']}, committed mean {c['mean']} median {c['median']} "
                f"p95 {c['p95']} s, first seen median {s['latency']['first_seen']['median']} s")
    if name == "capacity":
        return f"capacity {r['label']}: largest N under target {r['capacity']['max_n_under_target']}"
    if name == "overload":
        o = r["overload"]
        return (f"overload {r['label']}: admitted p95 {o['alone']['committed']['p95']} s alone, "
                f"{o['flood']['committed']['p95']} s beside the flood, {o['abuser']['committed']['p95']} s beside "
                f"the 10x speaker, {o['both']['committed']['p95']} s beside both")
    if name == "fanout":
        f = r["fanout"]
        return (f"fanout {r['label']}: {f['listeners']} listeners, missed {f['missed']}, "
                f"delivery p50/p99 {f['delivery_ms']['p50']}/{f['delivery_ms']['p99']} ms")
    return f"{name} {r['label']} done"
