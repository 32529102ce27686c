"""Loop stall: does an HTTP request for a long lecture's exports, answers or summary freeze everyone's captions?

One public room holds `--hours` of finals (one every 4 s of lecture, 8-20 words each, with word times), written
straight into a fresh database with the store API. A real `realtime serve` process opens it. A probe listener joins
the room, drains the history it is sent, then sends a `ping` every 20 ms and records each round trip (send ->
matching `pong`): the server answers pings on its event loop, so a round trip is the loop's stall as a client sees
it, and the same stall delays every caption in every room. For the first seconds nothing else happens (baseline);
then 3 clients in parallel loop over GET /export (srt, vtt, txt, json, md), GET /transcript, POST /ask with varied
questions and POST /summary, all with the admin key (a newer server rate-limits anonymous questions, not the admin;
an older one ignores the key on a public room). Reported: ping RTT percentiles at baseline and under load, requests
completed per kind with their latency, the server's peak RSS, and the machine.

    .venv/bin/python -m benchmarks.loopstall [--hours 6] [--seconds 60] [--out benchmarks/results/loopstall.json]

The lecture text is deterministic (seeded): sentences assembled from a lecture vocabulary in a few dozen templates,
the lecture drifting from topic to topic, with the English reference transcripts of `../shared/audio`
(REALTIME_TEST_AUDIO) quoted now and then, and rare names and numbers for a long-tailed vocabulary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, environment, write_json
from testbed.server import Server

ADMIN = "loopstall-admin-key-0123456789abcdef"  # the server's admin key (at least 24 characters)
SPEAKER = "loopstall-speaker-key-0123456789abcdef"
ROOM = "longroom"

# ---------------------------------------------------------------- a deterministic lecture

TOPICS: dict[str, tuple[str, str, str]] = {  # topic -> (nouns, verbs, adjectives), space separated
    "biology": ("cell membrane protein enzyme substrate mitochondria nucleus chromosome gene mutation ribosome "
                "chloroplast photosynthesis respiration organism species population tissue receptor hormone "
                "metabolism glucose molecule bacteria virus antibody neuron synapse",
                "binds divides replicates transcribes folds regulates absorbs releases inhibits catalyses "
                "expresses encodes",
                "cellular genetic molecular aerobic organic dominant recessive viral neural metabolic"),
    "physics": ("force mass acceleration velocity momentum energy particle field charge current voltage "
                "resistance wave frequency amplitude photon electron nucleus gravity orbit friction pressure "
                "temperature entropy vector quantum spin",
                "accelerates conserves radiates oscillates collides decays attracts repels rotates measures "
                "transfers dissipates",
                "kinetic potential electric magnetic thermal quantum relativistic linear elastic constant"),
    "history": ("empire revolution treaty dynasty colony parliament monarchy republic war army trade merchant "
                "peasant church reform constitution border kingdom emperor senate rebellion famine plague "
                "province harbour fortress",
                "conquered signed founded abolished declared ruled invaded negotiated collapsed reformed "
                "migrated taxed",
                "medieval colonial imperial ancient feudal industrial maritime royal civil religious"),
    "computing": ("algorithm array pointer function variable compiler processor memory cache thread process "
                  "network packet protocol database query index server client graph tree queue stack hash "
                  "kernel scheduler",
                  "allocates compiles executes iterates returns sorts searches caches schedules encrypts "
                  "parses serialises",
                  "recursive concurrent binary distributed linear dynamic static parallel greedy optimal"),
    "economics": ("market price demand supply inflation interest bank currency tax budget deficit labour wage "
                  "capital investment profit firm monopoly competition consumer household export import tariff "
                  "unemployment recession",
                  "rises falls invests borrows lends trades regulates subsidises taxes allocates stimulates "
                  "depreciates",
                  "fiscal monetary marginal competitive elastic nominal real global domestic aggregate"),
    "chemistry": ("atom bond molecule reaction acid base solution catalyst oxidation electron ion compound "
                  "element isotope polymer solvent equilibrium enthalpy concentration crystal metal gas "
                  "salt carbon oxygen hydrogen",
                  "reacts dissolves oxidises reduces bonds precipitates evaporates neutralises ionises "
                  "absorbs emits polymerises",
                  "covalent ionic acidic alkaline organic inert volatile soluble stable exothermic"),
    "literature": ("novel poem author narrator character plot chapter metaphor symbol theme stanza verse tragedy "
                   "comedy sonnet irony dialogue setting genre reader critic manuscript translation myth hero",
                   "describes narrates depicts suggests reveals portrays mirrors questions subverts echoes "
                   "contrasts evokes",
                   "romantic modernist tragic lyrical ironic epic gothic satirical realist allegorical"),
    "statistics": ("sample mean variance distribution probability hypothesis estimate error regression "
                   "correlation outlier median deviation confidence interval likelihood prior posterior model "
                   "parameter experiment survey histogram quantile bias noise",
                   "estimates predicts samples fits tests rejects averages normalises correlates simulates "
                   "overfits bootstraps",
                   "random normal independent significant unbiased robust bayesian empirical discrete "
                   "continuous"),
}
GENERAL = ("idea example question problem answer result method approach part point case reason fact system "
           "process theory evidence difference effect change number level rate role step value view way "
           "lecture slide exam assignment textbook figure table graph diagram definition argument").split()
GENERAL_VERBS = ("shows explains changes depends increases decreases matters means affects produces leads "
                 "follows determines supports contradicts").split()
GENERAL_ADJ = "important simple general basic useful interesting different similar key central main common".split()
TEMPLATES = [
    "So the {a} {n} {v} the {n2}.",
    "Remember that every {n} {v} a {a} {n2}, and that is the whole point.",
    "Now, why does the {n} matter here?",
    "If you look at the {g} on the slide, the {n} {v} the {n2} about {num} percent of the time.",
    "The {a} {n} is what we call the {n2}.",
    "Okay, let me give you an example: a {n} that {v} its own {n2}.",
    "This is where the {a} {n} comes in.",
    "In {year}, {name} showed that the {n} {v} the {n2} in a {a} way.",
    "You can think of the {n} as a kind of {a} {n2}.",
    "Does anyone know what happens to the {n} when the {n2} {v} it?",
    "The key {g} is that the {n} {gv} on the {a} {n2}.",
    "We measured the {n} at {num} different points, and the {g} was clear.",
    "Right, so {name}'s {g} tells us that the {n} {v} the {n2}.",
    "For the exam you need to know the {a} {n}, the {n2} and how they relate.",
    "Please read chapter {small} of the textbook on the {a} {n} before next week.",
    "I think the most {ga} {g} here is the {n}.",
    "Let's go back to the {n} for a moment, because it {gv} on the {n2}.",
    "And the {n2}, of course, {v} the {a} {n} as well.",
    "There are {small} kinds of {n}: the {a} one, the {a2} one, and a few rare ones.",
    "The {n} {v} the {n2}, which {gv} on the {a} {n3}.",
    "That is why a {a} {n} is so {ga} for the {n2}.",
    "We will come back to the {n} and the {n2} in the next lecture.",
    "Notice that the {n} never {v} the {n2} directly.",
    "So, to sum up this part: the {n} {v} the {n2}, and the {n3} {gv} on it.",
]
NAMES = ("Ada Baker Chen Dubois Eriksen Fischer Garcia Haddad Ito Jensen Kowalski Lindqvist Moreau Nakamura "
         "Okafor Petrov Quinn Rossi Schmidt Tanaka Ueda Varga Weber Xu Yilmaz Zhang").split()
SYLLABLES = "ka lo mi ne ru sa ta ve zo pi dra ken mor lin tesh vor".split()


def reference_sentences() -> list[str]:
    """The English reference transcripts of the test clips (../shared/audio), as sentences; [] without them."""
    try:
        from testbed.speech import audio_dir

        folder = audio_dir()
        texts = [p.read_text().strip() for p in sorted(folder.glob("*.txt"))
                 if p.stem.startswith(("fleurs-en", "jfk"))]
    except OSError:
        return []
    return [t[:1].upper() + t[1:] + ("" if t.endswith((".", "?", "!")) else ".") for t in texts if t]


def _sentence(rng: random.Random, topic: str, quotes: list[str], rare: list[str]) -> str:
    if quotes and rng.random() < 0.03:
        return rng.choice(quotes)
    nouns, verbs, adjs = (part.split() for part in TOPICS[topic])
    if rng.random() < 0.15:  # a word from another topic now and then
        other = rng.choice(list(TOPICS))
        nouns = nouns + TOPICS[other][0].split()[:6]
    if rng.random() < 0.8:  # the long tail: a rare term, half the time log-uniform (Zipf-like), else any one
        i = int(len(rare) ** rng.random()) - 1 if rng.random() < 0.5 else rng.randrange(len(rare))
        nouns = nouns + [rare[i]] * 12

    def pick(words: list[str]) -> str:  # Zipf-like: the first words of a list come up more often
        return words[min(len(words) - 1, int(rng.paretovariate(1.2)) - 1)] if rng.random() < 0.6 else \
            rng.choice(words)

    n, n2, n3 = rng.sample(nouns, 3)
    if rng.random() < 0.4:
        n2 = rare[rng.randrange(len(rare))]
    a, a2 = rng.sample(adjs + GENERAL_ADJ[:3], 2)
    return rng.choice(TEMPLATES).format(
        n=n, n2=n2, n3=n3, v=pick(verbs), a=a, a2=a2, g=pick(GENERAL), gv=pick(GENERAL_VERBS), ga=pick(GENERAL_ADJ),
        num=rng.choice([2, 3, 5, 10, 12, 20, 25, 30, 40, 50, 75, 90, 100, 250, 1000]), small=rng.randint(2, 9),
        year=rng.randint(1600, 2024), name=rng.choice(NAMES))


def lecture_finals(hours: float, seed: int = 42) -> list[dict[str, Any]]:
    """`hours` of finals as the server publishes them: one per ~4 s, 8-20 words, word times, ids from 0."""
    rng = random.Random(seed)
    quotes = reference_sentences()
    rare = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(20000)]
    topics = list(TOPICS)
    topic, words_left = rng.choice(topics), []
    finals: list[dict[str, Any]] = []
    t, end_s = 2.0, hours * 3600
    while t < end_s:
        if rng.random() < 0.002:  # every half hour or so, the lecture moves on
            topic = rng.choice(topics)
        n = rng.randint(8, 20)
        while len(words_left) < n:
            words_left += _sentence(rng, topic, quotes, rare).split()
        words, words_left = words_left[:n], words_left[n:]
        span = rng.uniform(2.8, 3.7)
        step = span / n
        ws = []
        for k, w in enumerate(words):
            a = t + k * step + rng.uniform(0, 0.03)
            ws.append({"w": w, "start": round(a, 2), "end": round(a + step * rng.uniform(0.6, 0.95), 2),
                       "p": round(rng.uniform(0.55, 0.99), 3)})
        i = len(finals)
        finals.append({"type": "final", "seq": i + 1, "id": i, "utterance": i, "start": round(t, 2),
                       "end": ws[-1]["end"], "text": " ".join(words), "language": "en", "words": ws})
        t += 4.0 + rng.uniform(-0.3, 0.3)
    return finals


def notes_event(finals: list[dict[str, Any]], seq: int, count: int = 40) -> dict[str, Any]:
    """Notes as a finished lecture has them (one bullet per stretch of it), stored after the last final, so that the
    restored room has nothing left to take notes on: no background notes run competes with the measured requests."""
    step = max(1, len(finals) // count)
    bullets = [{"id": f"x{f['id']}.0", "text": f["text"][:200], "refs": [f["id"]], "parent": None}
               for f in finals[::step][:count]]
    return {"type": "notes", "seq": seq, "version": 1, "source": "extractive", "bullets": bullets,
            "added": [b["id"] for b in bullets], "changed": [], "removed": []}


def build_db(path: Path, hours: float, seed: int = 42) -> int:
    """A fresh database holding one public room (a speaker key, no viewer key) with `hours` of finals and notes."""
    from realtime.core.access import hash_key
    from realtime.storage.sqlite import RoomRecord, open_store

    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    finals = lecture_finals(hours, seed)
    store = open_store(str(path))
    try:
        store.add_room(RoomRecord(ROOM, "A long lecture", time.time() - hours * 3600, hash_key(SPEAKER)))
        for f in finals:
            store.save_final(ROOM, f, f["end"])
        store.save_notes(ROOM, notes_event(finals, finals[-1]["seq"] + 1))
    finally:
        store.close()
    return len(finals)


# ---------------------------------------------------------------- the probe and the load

PING_S = 0.02


def percentiles(values_s: list[float]) -> dict[str, Any]:
    if not values_s:
        return {"n": 0}
    ms = sorted(v * 1000 for v in values_s)

    def q(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 1)

    return {"n": len(ms), "p50": q(50), "p90": q(90), "p99": q(99), "max": round(ms[-1], 1),
            "mean": round(sum(ms) / len(ms), 1)}


async def probe(url: str, seconds: float, baseline_s: float, load_started: threading.Event) -> dict[str, Any]:
    """Ping the server every PING_S over a listener socket; round trips before and after the load starts."""
    import websockets

    async with websockets.connect(url, max_size=None, open_timeout=60, ping_interval=None) as ws:
        hello = json.loads(await ws.recv())
        t0 = time.monotonic()
        await ws.send(json.dumps({"type": "ping", "id": "sync"}))
        history = 0
        while True:  # the history comes before the answer to a ping sent after joining
            msg = json.loads(await ws.recv())
            if msg.get("type") == "pong" and msg.get("id") == "sync":
                break
            history += 1
        drained_s = time.monotonic() - t0
        sent: dict[int, float] = {}
        rtt: dict[int, float] = {}
        phase: dict[int, str] = {}

        async def receive() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                if msg.get("type") == "pong" and isinstance(msg.get("id"), int):
                    rtt[msg["id"]] = time.monotonic() - sent[msg["id"]]

        reader = asyncio.get_running_loop().create_task(receive())
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) < start + seconds:
            if now >= start + baseline_s and not load_started.is_set():
                load_started.set()
            sent[n], phase[n] = time.monotonic(), "load" if load_started.is_set() else "baseline"
            await ws.send(json.dumps({"type": "ping", "id": n}))
            n += 1
            await asyncio.sleep(max(0.0, start + n * PING_S - time.monotonic()))
        deadline = time.monotonic() + 120  # the load has stopped: wait for every answer
        while len(rtt) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
    return {"hello_finals": hello.get("finals"), "history_events": history, "history_drain_s": round(drained_s, 2),
            "sent": n, "answered": len(rtt),
            "baseline": percentiles([rtt[i] for i in rtt if phase[i] == "baseline"]),
            "load": percentiles([rtt[i] for i in rtt if phase[i] == "load"])}


KINDS = ["export?format=srt", "export?format=vtt", "export?format=txt", "export?format=json", "export?format=md",
         "transcript", "ask", "summary"]
QUESTION_FORMS = ["What did the lecture say about the {a} and the {b}?", "How does the {a} affect the {b}?",
                  "Why is the {a} important?", "Can you explain {a} again?", "what was the example with {a} and {b}",
                  "When did we talk about {a}?"]


def questions(seed: int, count: int = 200) -> list[str]:
    rng = random.Random(seed)
    words = [w for nouns, _, _ in TOPICS.values() for w in nouns.split()] + GENERAL
    return [rng.choice(QUESTION_FORMS).format(a=rng.choice(words), b=rng.choice(words)) for _ in range(count)]


def load_client(base: str, client: int, stop: threading.Event, results: list[dict[str, Any]]) -> None:
    """Requests one after another, kinds in a shuffled cycle, until `stop`; each result appended to `results`."""
    rng = random.Random(client)
    asks = questions(client)
    auth = {"Authorization": f"Bearer {ADMIN}"}
    k = 0
    while not stop.is_set():
        kinds = KINDS[:]
        rng.shuffle(kinds)
        for kind in kinds:
            if stop.is_set():
                break
            url = f"{base}/v1/rooms/{ROOM}/{kind}"
            if kind == "ask":
                body = json.dumps({"question": asks[k % len(asks)]}).encode()
                k += 1
                req = urllib.request.Request(url, body, {**auth, "Content-Type": "application/json"}, method="POST")
            elif kind == "summary":
                req = urllib.request.Request(url, b"", auth, method="POST")
            else:
                req = urllib.request.Request(url)
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    size, status = len(r.read()), r.status
            except urllib.error.HTTPError as exc:
                size, status = len(exc.read()), exc.code
            except OSError as exc:
                size, status = 0, type(exc).__name__
            results.append({"kind": kind.split("=")[-1] if "=" in kind else kind, "status": status, "bytes": size,
                            "start": t0, "s": time.monotonic() - t0})


def request_table(results: list[dict[str, Any]], window_end: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(r["kind"] for r in results):
        rs = [r for r in results if r["kind"] == kind]
        ok = [r for r in rs if r["status"] == 200]
        out[kind] = {"completed": len(rs), "ok": len(ok),
                     "in_window": sum(1 for r in rs if r["start"] + r["s"] <= window_end),
                     "statuses": dict(sorted(Counter(str(r["status"]) for r in rs).items())),
                     "bytes": max((r["bytes"] for r in ok), default=0),
                     "latency": percentiles([r["s"] for r in ok])}
    return out


def run(hours: float, seconds: float, baseline_s: float, clients: int, workdir: Path) -> dict[str, Any]:
    from testbed.speech import ROOT

    quotes = len(reference_sentences())
    if not quotes:
        print("no reference transcripts (../shared/audio, REALTIME_TEST_AUDIO): the lecture quotes none",
              file=sys.stderr)
    db = workdir / "loopstall-room.db"
    t0 = time.monotonic()
    finals = build_db(db, hours)
    build_s = time.monotonic() - t0
    print(f"database: {finals} finals ({hours:g} h) in {build_s:.1f} s: {db}", file=sys.stderr)
    server = Server(["--db", str(db)], workdir / "loopstall-server.log",
                    env={"REALTIME_ADMIN_KEY": ADMIN, "REALTIME_DB": str(db)})
    try:
        cwd = Path(f"/proc/{server.proc.pid}/cwd").resolve()
        startup_rss = server.peak_rss_mb()
        load_started, stop = threading.Event(), threading.Event()
        results: list[dict[str, Any]] = []
        threads = [threading.Thread(target=load_client, args=(server.http, c, stop, results), daemon=True)
                   for c in range(clients)]

        def start_load() -> None:
            load_started.wait()
            server.reset_peak_rss()
            for t in threads:
                t.start()

        starter = threading.Thread(target=start_load, daemon=True)
        starter.start()
        cpu0 = server.cpu_s()
        ping = asyncio.run(probe(f"{server.url}/ws/listen/{ROOM}", seconds, baseline_s, load_started))
        window_end = time.monotonic()
        stop.set()
        for t in threads:
            t.join(timeout=300)
        load_rss = server.peak_rss_mb()
        cpu_s = server.cpu_s() - cpu0
    finally:
        server.stop()
    return {
        "hours": hours, "finals": finals, "reference_sentences": quotes,
        "seconds": seconds, "baseline_s": baseline_s, "clients": clients,
        "ping_interval_ms": PING_S * 1000, "server_code": str(cwd), "code_root": str(ROOT),
        "ping_rtt_ms": ping,
        "requests": request_table(results, window_end),
        "server": {"peak_rss_mb_at_start": startup_rss, "peak_rss_mb_under_load": load_rss,
                   "cpu_s_during_run": round(cpu_s, 1)},
        "database_build_s": round(build_s, 1),
        "environment": environment(),
    }


def print_table(result: dict[str, Any]) -> None:
    ping = result["ping_rtt_ms"]
    print(f"loop stall, {result['hours']:g} h room ({result['finals']} finals), server code {result['server_code']}")
    print(f"{'ping RTT (ms)':16s} {'n':>6s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'max':>8s}")
    for phase in ("baseline", "load"):
        p = ping[phase]
        print(f"{phase:16s} {p['n']:6d} " + " ".join(f"{p.get(q, float('nan')):8.1f}" for q in
                                                     ("p50", "p90", "p99", "max")))
    print(f"{'request':16s} {'done':>6s} {'ok':>6s} {'p50 ms':>8s} {'p90 ms':>8s} {'max ms':>8s}  statuses")
    for kind, r in result["requests"].items():
        lat = r["latency"]
        print(f"{kind:16s} {r['completed']:6d} {r['ok']:6d} " + " ".join(f"{lat.get(q, float('nan')):8.1f}" for q in
                                                                        ("p50", "p90", "max")) + f"  {r['statuses']}")
    s = result["server"]
    print(f"server peak RSS {s['peak_rss_mb_at_start']} MB at start, {s['peak_rss_mb_under_load']} MB under load; "
          f"{s['cpu_s_during_run']} CPU s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loopstall", description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, default=6.0, help="length of the stored lecture")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the probe pings (baseline included)")
    p.add_argument("--baseline", type=float, default=5.0, help="seconds of pings before the load starts")
    p.add_argument("--clients", type=int, default=3, help="load clients in parallel")
    p.add_argument("--out", type=Path, default=RESULTS / "loopstall.json")
    args = p.parse_args(argv)
    result = run(args.hours, args.seconds, args.baseline, args.clients, RESULTS / "logs")
    write_json(args.out, result)
    print_table(result)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
