// Preloaded into the REAL cgpu with the OAuth fake: a slow link between opening a runtime terminal and typing
// the command into it. With $CGPU_FAKE_TYPE_DELAY_MS set, the first frame each websocket sends (cgpu's typed
// command) leaves that many milliseconds late, so a test can kill cgpu while its terminal is open and bare.
// Nothing in cgpu's source changes; without the variable this does nothing.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const delay = Number(process.env.CGPU_FAKE_TYPE_DELAY_MS || 0);
if (delay > 0) {
  const entry = process.argv[1] ? fs.realpathSync(process.argv[1]) : "";
  const require = createRequire(path.resolve(path.dirname(entry), "..", "..", "package.json"));
  const WebSocket = require("ws");
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function delayedSend(...args) {
    if (this.__typed) return send.apply(this, args);
    this.__typed = true;
    setTimeout(() => send.apply(this, args), delay);
  };
}
