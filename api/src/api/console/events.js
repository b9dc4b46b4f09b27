// Live events from `GET /api/events` (server-sent events). EventSource cannot
// send an Authorization header, so the stream is read with fetch and parsed
// here. When the stream ends or fails it reconnects, with a growing delay,
// sending `Last-Event-ID` so the server can replay what was missed.

import { authHeaders, emit, send } from "./api.js";
import { sleep } from "./dom.js";

const FIRST_RETRY_MS = 1000;
const LONGEST_RETRY_MS = 15000;

/** Turns text/event-stream chunks into `{type, data, id}` events. */
export class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.type = "";
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/[\r\n]/);
      // A "\r" at the very end may be the first half of "\r\n": wait for more.
      if (end === -1 || (this.buffer[end] === "\r" && end === this.buffer.length - 1)) return;
      const line = this.buffer.slice(0, end);
      const ending = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + ending);
      this.readLine(line);
    }
  }

  readLine(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return; // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }

  dispatch() {
    if (this.data.length) {
      this.onEvent({ type: this.type || "message", data: this.data.join("\n"), id: this.id });
    }
    this.type = "";
    this.data = [];
  }
}

/**
 * Follows the stream until `signal` aborts. `onEvent({type, data, id})`
 * gets each event (data parsed as JSON); `onState("live" | "reconnecting")`
 * hears the connection come and go.
 */
export function followEvents({ onEvent, onState, signal }) {
  let lastId = null;
  let delay = FIRST_RETRY_MS;

  const deliver = (event) => {
    if (event.id) lastId = event.id;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      data = event.data;
    }
    onEvent({ type: event.type, id: event.id, data });
  };

  async function readOnce() {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (lastId) headers["Last-Event-ID"] = lastId;
    const response = await send("/api/events", { headers, signal });
    if (response.status === 401) {
      emit("unauthorized");
      return;
    }
    if (!response.ok || !response.body) throw new Error(`events: HTTP ${response.status}`);
    onState("live");
    delay = FIRST_RETRY_MS;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser(deliver);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
    }
  }

  (async () => {
    while (!signal.aborted) {
      try {
        await readOnce();
      } catch {
        // Unreachable, a reset connection or an error status: retry below.
      }
      if (signal.aborted) return;
      onState("reconnecting");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, LONGEST_RETRY_MS);
    }
  })();
}
