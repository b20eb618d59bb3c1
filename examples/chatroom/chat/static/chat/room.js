// The room page: one WebSocket to /ws/chat/<slug>/?nick=..., reconnected with exponential
// backoff and jitter whenever it drops, with ?since=<epoch>:<offset> (the last position seen)
// so that the server sends exactly what the page missed. Wire protocol: chat/websockets.py.
// User data only ever reaches the page through textContent, never innerHTML.
(() => {
  "use strict";

  const NICK_KEY = "chatroom.nick";
  const ANONYMOUS = "anonymous"; // the server's name for a connection without a nickname
  const BACKOFF_FIRST_MS = 500; // first retry after 250..500 ms
  const BACKOFF_MAX_MS = 15000; // retries never wait more than 15 s
  const ERROR_SHOWN_MS = 6000;

  const root = document.getElementById("room");
  const list = document.getElementById("messages");
  const status = document.getElementById("status");
  const errorBox = document.getElementById("error");
  const form = document.getElementById("composer");
  const nickInput = document.getElementById("nick");
  const textInput = document.getElementById("text");
  const sendButton = document.getElementById("send");
  const presenceBox = document.getElementById("presence");
  const slug = root.dataset.slug;

  const shown = new Set(); // ids of the messages on the page: history is merged, not repeated
  let position = null; // the room's last position seen, {epoch, offset}: sent on reconnect
  let socket = null; // the current WebSocket; events of older ones are ignored
  let failures = 0; // connection attempts since the last successful one
  let retryTimer = null;
  let errorTimer = null;

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium",
    timeStyle: "short",
  });

  function loadNick() {
    try {
      return localStorage.getItem(NICK_KEY) || "";
    } catch {
      return ""; // storage disabled: the nickname lasts as long as the page
    }
  }

  function saveNick(nick) {
    try {
      localStorage.setItem(NICK_KEY, nick);
    } catch {
      /* storage disabled */
    }
  }

  function currentNick() {
    return nickInput.value.trim() || ANONYMOUS;
  }

  function setState(state) {
    status.dataset.state = state;
    status.textContent = state;
    root.dataset.state = state;
    sendButton.disabled = state !== "online";
    if (state !== "online") presenceBox.textContent = ""; // unknown until the next presence frame
  }

  function presenceText(frame) {
    // Named members once each; anonymous tabs share one name, so they are counted.
    const names = frame.users.filter((user) => user !== ANONYMOUS);
    const anonymous = frame.anonymous ?? (frame.users.includes(ANONYMOUS) ? 1 : 0);
    if (anonymous > 0) names.push(`${anonymous} ${ANONYMOUS}`);
    return names.join(", ");
  }

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const params = new URLSearchParams();
    const nick = nickInput.value.trim();
    if (nick) params.set("nick", nick);
    if (position) params.set("since", `${position.epoch}:${position.offset}`);
    const query = params.toString() ? `?${params}` : "";
    // Standalone mode (gunicorn + manage.py runwebsocket): the socket goes to the WebSocket
    // port given by the page (CHAT_WEBSOCKET_PORT), on the page's own host name.
    const wsPort = root.dataset.websocketPort;
    const host = wsPort ? `${location.hostname}:${wsPort}` : location.host; // [::1] keeps its []
    return `${scheme}//${host}/ws/chat/${encodeURIComponent(slug)}/${query}`;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    setState(failures === 0 ? "connecting" : "reconnecting");
    const ws = new WebSocket(socketUrl());
    socket = ws;
    ws.addEventListener("open", () => {
      if (socket !== ws) return;
      failures = 0;
      setState("online");
    });
    ws.addEventListener("message", (event) => {
      if (socket === ws) handleFrame(event.data);
    });
    ws.addEventListener("close", () => {
      if (socket !== ws) return; // replaced on purpose (new nickname)
      socket = null;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    failures += 1;
    // Exponential backoff with "equal jitter": half the ceiling plus a random half, so
    // clients dropped together by a server restart do not all return at the same moment.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (failures - 1));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    setState("reconnecting");
    retryTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    const old = socket;
    socket = null;
    if (old) old.close(1000, "reconnecting");
    failures = 0;
    connect();
  }

  function handleFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.position) remember(frame.position);
    if (frame.type === "history") {
      frame.messages.forEach(addMessage);
    } else if (frame.type === "message") {
      addMessage(frame);
    } else if (frame.type === "recovery") {
      root.dataset.recovered = String(frame.recovered); // true: the missed messages follow
    } else if (frame.type === "error") {
      showError(frame.error);
    } else if (frame.type === "presence") {
      presenceBox.textContent = presenceText(frame); // who is in the room, every process
    }
  }

  function remember(next) {
    // Message frames come in offset order; a history frame's position may be older than a
    // message already seen (read before it), and a new epoch means the old one is gone.
    if (!position || next.epoch !== position.epoch || next.offset > position.offset) {
      position = { epoch: next.epoch, offset: next.offset };
    }
  }

  function addMessage(message) {
    if (shown.has(message.id)) return;
    shown.add(message.id);
    const stick = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    // Keep id order: messages from different senders may be broadcast out of order, and a
    // history merged after a reconnect fills the gap before newer messages.
    let before = list.lastElementChild;
    while (before && Number(before.dataset.id) > message.id) before = before.previousElementSibling;
    list.insertBefore(renderMessage(message), before ? before.nextElementSibling : list.firstChild);
    if (stick) list.scrollTop = list.scrollHeight;
  }

  function renderMessage(message) {
    const item = document.createElement("li");
    item.className = "message";
    item.dataset.id = String(message.id);
    if (message.author === currentNick()) item.classList.add("mine");

    const meta = document.createElement("div");
    meta.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = message.author;
    const time = document.createElement("time");
    const created = new Date(message.created);
    time.dateTime = message.created;
    time.title = dateTimeFormat.format(created);
    time.textContent = timeFormat.format(created);
    meta.append(author, time);

    const text = document.createElement("p");
    text.className = "text";
    text.textContent = message.text;

    item.append(meta, text);
    return item;
  }

  function showError(reason) {
    errorBox.textContent = reason;
    errorBox.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => {
      errorBox.hidden = true;
    }, ERROR_SHOWN_MS);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = textInput.value;
    if (!text.trim() || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "message", text }));
    textInput.value = "";
    textInput.focus();
  });

  // The server takes the author from the handshake, so a new nickname means a new socket.
  nickInput.addEventListener("change", () => {
    nickInput.value = nickInput.value.trim();
    saveNick(nickInput.value);
    reconnectNow();
  });

  // Back online: do not wait for the backoff timer.
  window.addEventListener("online", () => {
    if (retryTimer !== null) connect();
  });

  // Logged in: the server takes the author from the session (websocket.user), not ?nick=.
  nickInput.value = root.dataset.user || loadNick();
  connect();
  textInput.focus();
})();
