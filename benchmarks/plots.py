"""PNG plots from result JSONs: latency CDFs per model/config, lag over a long stream, capacity curve.

matplotlib is optional (the `bench` extra): without it the harness still writes JSON and Markdown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cdf(values: list[float]) -> tuple[list[float], list[float]]:
    xs = sorted(values)
    return xs, [(i + 1) / len(xs) for i in range(len(xs))]


def latency_cdf(results: list[dict[str, Any]], path: Path, plt: Any) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        s = r["stream"]
        if "committed_values" not in s:
            continue
        line = ax.plot(*_cdf(s["committed_values"]), label=f"{r['label']} committed")[0]
        ax.plot(*_cdf(s["first_seen_values"]), linestyle="--", color=line.get_color(),
                label=f"{r['label']} first seen")
        if r.get("naive", {}).get("committed_values"):
            ax.plot(*_cdf(r["naive"]["committed_values"]), linestyle=":", color=line.get_color(),
                    label=f"{r['label']} naive {r['naive']['chunk_s']:g} s chunks")
    ax.axvline(3.3, color="grey", linewidth=0.8)
    ax.text(3.35, 0.05, "whisper_streaming\npaper mean 3.3 s", fontsize=7, color="grey")
    ax.set(xlabel="latency after the word ends (s)", ylabel="fraction of words", xlim=(-0.5, 8), ylim=(0, 1),
           title="Per-word caption latency, 1.0x real time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def lag(results: list[dict[str, Any]], path: Path, plt: Any) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for r in results:
        s = r["long"]
        minutes = [t / 60 for t, _ in s["lag_series"]]
        top.plot(minutes, [lag for _, lag in s["lag_series"]], linewidth=0.8, label=r["label"])
        bottom.scatter([t / 60 for t in s["committed_at"]], s["committed_values"], s=2, label=r["label"])
    top.set(ylabel="server decode lag (s)", title="A long stream at 1.0x: lag stays bounded?")
    bottom.set(xlabel="lecture time (min)", ylabel="word → committed (s)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def capacity(results: list[dict[str, Any]], path: Path, plt: Any) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    target = 2.5
    for r in results:
        rows = r["capacity"]["rows"]
        target = r["capacity"]["target_p95_s"]
        ns = [row["n"] for row in rows]
        line = ax.plot(ns, [row["committed"]["p95"] for row in rows], marker="o", label=f"{r['label']} p95")[0]
        ax.plot(ns, [row["committed"]["median"] for row in rows], marker="o", linestyle="--",
                color=line.get_color(), label=f"{r['label']} median")
    ax.axhline(target, color="grey", linewidth=0.8)
    ax.set(xscale="log", xlabel="concurrent speakers (separate rooms)", ylabel="word → committed (s)",
           title="Capacity at 1.0x real time")
    ax.set_xticks(sorted({row["n"] for r in results for row in r["capacity"]["rows"]}))
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.get_xaxis().set_major_formatter(ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw(by_section: dict[str, list[dict[str, Any]]], out: Path) -> list[Path]:
    """Every plot the results allow; returns the files written (none without matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return []
    written = []
    for name, fn, file in (("stream", latency_cdf, "latency-cdf.png"), ("long", lag, "lag.png"),
                           ("capacity", capacity, "capacity.png")):
        if by_section.get(name):
            fn(by_section[name], out / file, plt)
            written.append(out / file)
    return written
