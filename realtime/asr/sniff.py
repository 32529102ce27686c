"""Does a file FFmpeg cannot open start like audio? That decides between "corrupt" (400: an audio file that is
damaged) and "not_audio" (415: something else was sent), so the answer tells the user what to fix.

Container formats are told by their magic bytes. Bare MPEG audio and ADTS (AAC) have none, only a frame sync of
11 set bits, which one random file in 2,048 starts with; so a bare stream counts as audio only when a second valid
frame header follows the first exactly where the first one's length says.
"""

from __future__ import annotations

MAGIC = (b"RIFF", b"ID3", b"fLaC", b"OggS", b"FORM", b"caff", b"\x1aE\xdf\xa3", b"#!AMR", b"MAC ", b"wvpk")
HEAD_BYTES = 8192  # enough for two frames of any MPEG layer and bitrate (the largest is 2,880 bytes)

# kbit/s by bitrate index 1..14, per (MPEG-1?, layer)
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_BITRATES[(False, 3)] = _BITRATES[(False, 2)]
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


def _mpeg_frame_length(h: bytes) -> int | None:
    """The length in bytes of the MPEG audio frame whose 4-byte header is `h`, or None when it is not one."""
    if len(h) < 4 or h[0] != 0xFF or h[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (h[1] >> 3) & 3, (h[1] >> 1) & 3
    bitrate_index, rate_index, padding = h[2] >> 4, (h[2] >> 2) & 3, (h[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or a free-format stream (whose length cannot be told from the header)
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    return (144 if layer == 2 or mpeg1 else 72) * bitrate // rate + padding


def _adts_frame_length(h: bytes) -> int | None:
    """The length of the ADTS (AAC) frame whose header is `h`, or None."""
    if len(h) < 7 or h[0] != 0xFF or h[1] & 0xF6 != 0xF0 or (h[2] >> 2) & 0xF > 12:
        return None
    length = ((h[3] & 3) << 11) | (h[4] << 3) | (h[5] >> 5)
    return length if length >= 7 else None


def looks_like_audio(head: bytes) -> bool:
    """True when `head` (the file's first HEAD_BYTES) starts like a container of audio or a bare audio stream."""
    if head.startswith(MAGIC) or head[4:8] == b"ftyp":
        return True
    for frame_length in (_mpeg_frame_length, _adts_frame_length):
        first = frame_length(head)
        if first is not None:
            return frame_length(head[first:]) is not None
    return False
