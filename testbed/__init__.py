"""What the tests and the benchmarks both need, in a package of its own, so that neither has to import the other's
helpers.

tests/ and benchmarks/ both play test speech to a real `realtime serve` process and time the captions that come
back. Before this package the benchmarks imported the tests' speech module, the tests' conftest imported the
benchmarks' common module, and the latency measurement lived in the product package (as realtime's latency module)
although only tests and benchmarks use it. Now both import from here:

- `testbed.speech`: recorded clips (REALTIME_TEST_AUDIO) or espeak-ng speech, lectures made of them, WER;
- `testbed.server`: a server child process (Server, and the tests' offline ServerProcess), free ports, and the
  cache and artifact folders;
- `testbed.latency`: word latencies, final delays and their percentiles from a recorded event stream.

Tests may still test benchmark code; the benchmarks depend on nothing in the test suite, and tests take these
helpers from here, never from conftest.py (which keeps only the pytest fixtures). Not installed: it is found from
the repository root (pytest's rootdir, `python -m benchmarks.run`), like tests/ and benchmarks/.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root
