"""The parts of tests/e2e/test_fuzz.py: strategies, the protocol model and the harness."""
