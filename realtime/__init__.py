"""realtime: live lecture captions over WebSocket with streaming Whisper."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
