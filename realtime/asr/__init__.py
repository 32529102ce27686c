"""Speech recognition: loading Whisper and Silero from local paths, decoding, and the decoder pool that shares one
model between lectures (threads and asyncio live here, not in the core)."""
