"""The sans-I/O core: plain classes fed with data (wire protocol, audio framing, VAD segmentation, the commit
policy, the lecture state machine, room numbering and replay, access rules, exports). Nothing here imports asyncio,
aiohttp, sqlite3, threading or faster_whisper; tests/core/test_layers.py checks it."""
