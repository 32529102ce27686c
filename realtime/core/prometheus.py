"""Prometheus text exposition (format 0.0.4) of values gathered at scrape time. Sans-I/O.

The server keeps its counters where the work happens (engine stats, rooms, notes service) and assembles
`Family` values when `/metrics` is scraped, so no metric is updated on a hot path twice and no client library
(with its process-global registry) is needed for the handful of series we expose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Family:
    name: str
    kind: str  # counter | gauge
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self


def counter(name: str, help: str, value: float | None = None) -> Family:
    fam = Family(name, "counter", help)
    return fam.add(value) if value is not None else fam


def gauge(name: str, help: str, value: float | None = None) -> Family:
    fam = Family(name, "gauge", help)
    return fam.add(value) if value is not None else fam


def render(families: list[Family]) -> str:
    lines: list[str] = []
    for fam in families:
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            label_text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{fam.name}{{{label_text}}} {_number(value)}" if label_text
                         else f"{fam.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
