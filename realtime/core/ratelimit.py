"""Rate limits and connection caps (sans-I/O: every method takes the time it is called at).

`TokenBucket` paces one sender (audio seconds, messages). `ClientBuckets` keeps one bucket per client address for
requests that cost the server something whoever sends them (questions, summaries, failed admin keys), bounded in
size so that a scan from many addresses cannot grow memory. `ConnectionCounter` holds the server-wide and
per-address WebSocket counts.
"""

from __future__ import annotations

from collections import OrderedDict

MESSAGE_RATE = 100.0  # messages a connection may send per second, sustained (audio in 10 ms packets is 100/s)
MESSAGE_BURST = 3000.0  # ... and at once: the lecturer page flushing 120 s of buffered 50 ms packets is 2400


class TokenBucket:
    """A token bucket: `rate` per second sustained plus `burst_s` at once. For audio the tokens are seconds of audio
    (a speaker may send `rate` x real time), for messages they are messages. `spend` returns how long to wait
    before reading on, so a fast sender is slowed by TCP backpressure rather than cut off (a browser flushing
    audio buffered during a blip is a legitimate burst), and a flood of messages cannot take the event loop."""

    def __init__(self, rate: float, burst_s: float, now: float):
        self.rate = rate
        self.burst_s = burst_s
        self.tokens = burst_s
        self.t = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst_s, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def spend(self, seconds: float, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        self.refill(now)
        self.tokens -= seconds
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def try_spend(self, amount: float, now: float) -> float:
        """Spend `amount` if the bucket holds it and return 0; otherwise spend nothing and return the seconds until
        it would (for a `Retry-After`). A rate of 0 means no limit."""
        if self.rate <= 0:
            return 0.0
        self.refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate


class ClientBuckets:
    """One `TokenBucket` per client address: `rate` per second after a burst of `burst`. At most `max_clients`
    addresses are remembered (least recently seen forgotten first: a forgotten address starts with a full burst,
    which is what a new one gets anyway)."""

    def __init__(self, rate: float, burst: float, max_clients: int = 10_000):
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def _bucket(self, client: str, now: float) -> TokenBucket:
        bucket = self._buckets.pop(client, None) or TokenBucket(self.rate, self.burst, now)
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return bucket

    def take(self, client: str, now: float, amount: float = 1.0) -> float:
        """0 when `client` may go ahead (and it is charged), else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        return self._bucket(client, now).try_spend(amount, now)

    def blocked(self, client: str, now: float) -> float:
        """Seconds until `client` has a token again (0: it has one), without charging it."""
        bucket = self._buckets.get(client)
        if bucket is None or self.rate <= 0:
            return 0.0
        bucket.refill(now)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate


class ConnectionCounter:
    """Open connections, in all and per client address; `admit` refuses beyond either cap (0 = no per-address cap)."""

    def __init__(self, max_total: int, max_per_client: int = 0):
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.total = 0
        self.by_client: dict[str, int] = {}

    def admit(self, client: str) -> str | None:
        """Count a new connection and return None, or return why it is refused ("total" or "client")."""
        if self.total >= self.max_total:
            return "total"
        held = self.by_client.get(client, 0)
        if self.max_per_client and held >= self.max_per_client:
            return "client"
        self.total += 1
        self.by_client[client] = held + 1
        return None

    def release(self, client: str) -> None:
        held = self.by_client.get(client, 0)
        if held <= 0:
            return
        self.total -= 1
        if held == 1:
            del self.by_client[client]
        else:
            self.by_client[client] = held - 1
