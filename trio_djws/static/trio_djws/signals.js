/*
 * trio_djws signals client (wire format versions 1 and 2). No build step.
 *
 * A plain <script> (what {% websocket_script %} includes) defines the global `TrioDJWS`;
 * ES modules import `signals.mjs` next to this file, which re-exports it.
 *
 *   TrioDJWS.connect("chat.typing", ({nick}) => show(nick));  // server → this window
 *   TrioDJWS.call("chat.typing", {room: 3});                   // this window → Python
 *   TrioDJWS.addEventListener("state", (e) => e.detail.state); // connecting|open|reconnecting|closed
 *   TrioDJWS.addEventListener("error", (e) => e.detail);       // {signal, error, detail}
 *   TrioDJWS.addEventListener("resync", (e) => e.detail.group); // calls of a group were lost
 *
 * The socket reconnects by itself with exponential backoff and jitter (0.5 s doubling up to
 * 30 s, each delay drawn between half and all of it); calls made while it is not open wait
 * in a bounded queue (100 calls; the oldest is dropped beyond that, with a "dropped" event)
 * and are sent, in order, once the server has said hello again.
 *
 * Groups with history (WEBSOCKET_GROUP_HISTORY): the client remembers the last position of
 * each such group (from the hello frame and every call through it) and reconnects with
 * ?since={"<group>": "<epoch>:<offset>"}, so the calls the window missed run once each, in
 * order; a group the server cannot recover raises a "resync" event instead.
 */
(function (root) {
  "use strict";
  if (root.TrioDJWS) {
    return; // loaded twice (a <script> and the module): one client per page
  }

  const VERSION = 1; // the frames this client sends
  const VERSIONS = [1, 2]; // the frames it reads (2: group history)
  const MAX_QUEUED_CALLS = 100;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const DOM_EVENTS = [
    "change", "input", "click", "submit", "keyup", "keydown", "focusin", "focusout",
  ];

  class Client extends EventTarget {
    constructor() {
      super();
      this.functions = new Map(); // signal name → [function]
      this.queue = []; // frames waiting for an open socket
      this.state = "idle";
      this.window = null; // the window key, from the server's hello
      this.socket = null;
      this.attempt = 0;
      this.timer = null;
      this.config = null;
      this.stopped = false;
      this.positions = new Map(); // history group → its last position {epoch, offset}
    }

    /** Register `fn(kwargs)` for signal `name` (called when the server triggers it). */
    connect(name, fn) {
      if (!this.functions.has(name)) {
        this.functions.set(name, []);
      }
      this.functions.get(name).push(fn);
    }

    /** Unregister a function registered with connect(). */
    disconnect(name, fn) {
      const list = (this.functions.get(name) || []).filter((f) => f !== fn);
      this.functions.set(name, list);
    }

    /** Call the Python signal `name` with `kwargs` (queued while not connected). */
    call(name, kwargs) {
      const frame = JSON.stringify({ v: VERSION, type: "call", signal: name, kwargs: kwargs || {} });
      if (this.state === "open" && this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(frame);
        return;
      }
      if (this.queue.length >= MAX_QUEUED_CALLS) {
        const dropped = this.queue.shift();
        this.dispatchEvent(new CustomEvent("dropped", { detail: JSON.parse(dropped) }));
      }
      this.queue.push(frame);
    }

    /** Open the socket: `config` = {url, token, port?}, as {% websocket_script %} renders it. */
    start(config) {
      this.config = config;
      this.stopped = false;
      this.open();
    }

    /** Close for good (no reconnect). */
    stop() {
      this.stopped = true;
      clearTimeout(this.timer);
      const socket = this.socket;
      this.socket = null;
      if (socket) {
        socket.close(1000);
      }
      this.setState("closed");
    }

    setState(state) {
      if (state !== this.state) {
        this.state = state;
        this.dispatchEvent(new CustomEvent("state", { detail: { state } }));
      }
    }

    open() {
      const url = new URL(this.config.url, root.location.href);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      if (this.config.port) {
        url.port = String(this.config.port); // the standalone server (manage.py runwebsocket)
      }
      if (this.config.token) {
        url.searchParams.set("token", this.config.token);
      }
      if (this.positions.size) {
        const since = {};
        for (const [group, p] of this.positions) {
          since[group] = `${p.epoch}:${p.offset}`;
        }
        url.searchParams.set("since", JSON.stringify(since));
      }
      this.setState(this.attempt ? "reconnecting" : "connecting");
      const socket = new WebSocket(url.href);
      this.socket = socket;
      socket.onmessage = (event) => this.receive(event.data);
      socket.onclose = () => {
        if (this.socket === socket) {
          this.socket = null;
          this.scheduleReconnect();
        }
      };
    }

    scheduleReconnect() {
      if (this.stopped) {
        return;
      }
      const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
      const delay = ceiling / 2 + Math.random() * (ceiling / 2); // jitter: no thundering herd
      this.attempt += 1;
      this.setState("reconnecting");
      this.timer = setTimeout(() => this.open(), delay);
    }

    receive(data) {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch (error) {
        console.warn("TrioDJWS: a frame that is not JSON", error);
        return;
      }
      if (!VERSIONS.includes(frame.v)) {
        return; // another protocol on the same group (e.g. a chat socket's frames)
      }
      if (frame.group && frame.position) {
        this.positions.set(frame.group, frame.position); // calls come in offset order
      }
      if (frame.type === "hello") {
        this.window = frame.window;
        for (const [group, position] of Object.entries(frame.positions || {})) {
          this.positions.set(group, position);
        }
        this.attempt = 0;
        this.setState("open");
        const waiting = this.queue;
        this.queue = [];
        for (const queued of waiting) {
          this.socket.send(queued);
        }
      } else if (frame.type === "call") {
        for (const fn of this.functions.get(frame.signal) || []) {
          try {
            fn(frame.kwargs || {});
          } catch (error) {
            console.error(`TrioDJWS: the function for ${frame.signal} failed`, error);
          }
        }
      } else if (frame.type === "error") {
        this.dispatchEvent(new CustomEvent("error", { detail: frame }));
      } else if (frame.type === "resync") {
        this.dispatchEvent(new CustomEvent("resync", { detail: { group: frame.group } }));
      }
    }
  }

  function serializeForm(element) {
    const form = element.tagName === "FORM" ? element : element.form || element.closest("form");
    if (!form) {
      return [];
    }
    const fields = [];
    for (const [name, value] of new FormData(form)) {
      if (typeof value === "string") {
        fields.push({ name, value });
      }
    }
    return fields;
  }

  // {% js_call %}: one capturing listener per event type on the document.
  function onDomEvent(event) {
    for (let el = event.target; el && el.dataset; el = el.parentElement) {
      if (el.dataset.djwsCall && el.dataset.djwsOn === event.type) {
        const kwargs = JSON.parse(el.dataset.djwsKwargs || "{}");
        if (el.dataset.djwsForm) {
          kwargs[el.dataset.djwsForm] = serializeForm(el);
        }
        if (el.dataset.djwsValue) {
          kwargs[el.dataset.djwsValue] = el.value;
        }
        if (event.type === "submit") {
          event.preventDefault();
        }
        client.call(el.dataset.djwsCall, kwargs);
        return;
      }
    }
  }

  const client = new Client();
  root.TrioDJWS = client;
  if (root.document) {
    for (const type of DOM_EVENTS) {
      root.document.addEventListener(type, onDomEvent, true);
    }
    const config = root.document.getElementById("trio-djws-config");
    if (config) {
      client.start(JSON.parse(config.textContent));
    }
  }
})(globalThis);
