/* The WebSocket close codes of the realtime protocol (docs/protocol.md, realtime/core/protocol.py), which of them
 * are final, and what the pages say after each: one table for the pages of this server. The widget keeps its own
 * copy (it is one file, embedded by other sites); tests/core/test_static.py checks that all of them agree.
 *
 * Keep the tables plain literals: the test reads them with regular expressions.
 */
"use strict";

globalThis.RealtimeProtocol = Object.freeze({
  CLOSE: Object.freeze({
    NORMAL: 1000,
    GOING_AWAY: 1001,
    INTERNAL: 1011,
    TRY_AGAIN: 1013,
    BAD_ROOM: 4400,
    KEY: 4401,
    ORIGIN: 4403,
    NO_SUCH_ROOM: 4404,
    SLOW_LISTENER: 4408,
    SPEAKER_EXISTS: 4409,
    IDLE: 4410,
    TOO_LONG: 4413,
  }),
  // Reconnecting cannot help until the room name, the key or the server's configuration changes.
  PERMANENT: Object.freeze([4400, 4401, 4403, 4404, 4413]),
  // What the lecturer page says after a close; {room}, {origin} and {secs} are filled in. Any other code (1006: the
  // network) reads like 1000.
  SPEAKER_TEXT: Object.freeze({
    1000: "Connection lost. Reconnecting in {secs} s; your audio is kept and sent after.",
    1001: "Connection lost. Reconnecting in {secs} s; your audio is kept and sent after.",
    1011: "Connection lost. Reconnecting in {secs} s; your audio is kept and sent after.",
    1013: "The captioning server is at capacity. Retrying in {secs} s; your audio is kept.",
    4400: "That room name is not valid: use letters, digits, dots, dashes and underscores.",
    4401: "This room needs its speaker key: paste it into the Speaker key field and start again.",
    4403: "This captioning server does not accept pages from {origin}. Its administrator can allow "
      + "them with --allowed-origins.",
    4404: "There is no room “{room}” on this server: create it with realtime room create.",
    4408: "Connection lost. Reconnecting in {secs} s; your audio is kept and sent after.",
    4409: "Another speaker is connected to room “{room}”. Retrying in {secs} s.",
    4410: "Connection lost. Reconnecting in {secs} s; your audio is kept and sent after.",
    4413: "This lecture reached the server's maximum length; its transcript is kept.",
  }),
  // The close reason of 4409 when another lecturer page took the room over: final too.
  TAKEN_OVER_TEXT: "Another lecturer page took over this room with its speaker key.",
  // What the captions widget says after a permanent close (static/widget.js holds the same table).
  VIEWER_TEXT: Object.freeze({
    4400: "invalid room name",
    4401: "this room is private: open it with the viewer link that carries its key",
    4403: "this site may not show these captions (ask the server to allow it)",
    4404: "there is no such room",
    4413: "the lecture reached the server's maximum length",
  }),
});
