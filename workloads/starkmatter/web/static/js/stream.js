// One WebSocket for the whole page. Panels subscribe to topics (reference-counted); on a
// dropped connection the stream reconnects with backoff, resubscribes every topic, and
// tells its listeners so they reload their REST snapshots.
//
// Wire protocol (gateway /ws): client ops {"op":"subscribe"|"unsubscribe","topics":[...]},
// {"op":"auth","token":...}; server frames
// {"type":"snapshot"|"update"|"error"|"heartbeat","topic":...,"data":...}.
//
// The gateway closes the socket (1008) when the session ends or the token it was opened with
// expires: whenever the page has refreshed its token, the open socket is handed the new one.

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
const SILENCE_LIMIT_MS = 45000;

export class Stream {
  constructor(urlProvider, tokenProvider) {
    this.urlProvider = urlProvider;
    this.tokenProvider = tokenProvider;
    this.handlers = new Map(); // topic -> Set(handler)
    this.stateListeners = new Set();
    this.socket = null;
    this.state = "idle";
    this.attempt = 0;
    this.wanted = false;
    this.everOpened = false;
    this.reconnectTimer = null;
    this.watchdog = null;
    this.lastFrameAt = 0;
    this.reconnects = 0;
    this.token = null; // the token the gateway holds for the open socket
  }

  onState(listener) {
    this.stateListeners.add(listener);
  }

  setState(state, detail) {
    this.state = state;
    for (const listener of this.stateListeners) listener(state, detail || {});
  }

  start() {
    this.wanted = true;
    if (!this.socket) this.open();
  }

  stop() {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.watchdog);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, "logout");
    this.setState("idle");
  }

  open() {
    clearTimeout(this.reconnectTimer);
    const token = this.tokenProvider();
    const base = this.urlProvider();
    if (!token || !base) return;
    this.setState(this.everOpened ? "reconnecting" : "connecting", { attempt: this.attempt });
    // The token goes in the first message, not the URL: proxies and ingresses log URLs.
    const socket = new WebSocket(base);
    this.socket = socket;
    this.token = token;
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      const wasReconnect = this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      this.lastFrameAt = Date.now();
      this.send({ op: "auth", token });
      const topics = [...this.handlers.keys()];
      if (topics.length) this.send({ op: "subscribe", topics });
      clearInterval(this.watchdog);
      this.watchdog = setInterval(() => {
        this.checkSilence();
        this.checkToken();
      }, 5000);
      if (wasReconnect) this.reconnects += 1;
      this.setState("open", { reconnected: wasReconnect });
    });
    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.dispatch(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      clearInterval(this.watchdog);
      if (!this.wanted) return;
      if (event.code === 4401 || event.code === 1008) {
        // The gateway refused the token: let the page refresh it, then come back.
        this.setState("unauthorized", { code: event.code, reason: event.reason });
      }
      this.scheduleReconnect(event.reason || `code ${event.code}`);
    });
  }

  scheduleReconnect(reason) {
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.setState("reconnecting", { reason, delay, attempt: this.attempt });
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  checkSilence() {
    if (this.socket && Date.now() - this.lastFrameAt > SILENCE_LIMIT_MS) {
      const socket = this.socket;
      this.socket = null;
      socket.close(4000, "silent");
      this.scheduleReconnect("no heartbeat");
    }
  }

  /** Hand a refreshed token to the open socket, which would otherwise close at expiry. */
  checkToken() {
    const token = this.tokenProvider();
    if (!token || token === this.token || !this.socket) return;
    if (this.socket.readyState !== WebSocket.OPEN) return;
    this.token = token;
    this.send({ op: "auth", token });
  }

  /** Drop the connection as if the network had failed (used by the UI's reconnect button). */
  drop() {
    if (!this.socket) return;
    const socket = this.socket;
    this.socket = null;
    clearInterval(this.watchdog);
    socket.close(4000, "dropped");
    this.scheduleReconnect("dropped");
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  dispatch(frame) {
    const type = frame.type || frame.op;
    if (type === "heartbeat" || type === "pong") return;
    const topic = frame.topic || frame.channel;
    if (type === "error") {
      for (const listener of this.stateListeners) listener("frame-error", frame);
    }
    if (!topic) return;
    const handlers = this.handlers.get(topic);
    if (!handlers) return;
    for (const handler of handlers) {
      try {
        handler(frame.data === undefined ? frame.payload : frame.data, type, frame);
      } catch (err) {
        console.warn("handler failed for", topic, err);
      }
    }
  }

  /** Subscribe a handler to a topic; returns the function that unsubscribes it. */
  subscribe(topic, handler) {
    let handlers = this.handlers.get(topic);
    if (!handlers) {
      handlers = new Set();
      this.handlers.set(topic, handlers);
      this.send({ op: "subscribe", topics: [topic] });
    }
    handlers.add(handler);
    return () => {
      const current = this.handlers.get(topic);
      if (!current) return;
      current.delete(handler);
      if (current.size === 0) {
        this.handlers.delete(topic);
        this.send({ op: "unsubscribe", topics: [topic] });
      }
    };
  }
}

/** A set of topic subscriptions owned by one panel, live only while the panel is visible. */
export class PanelSubscriptions {
  constructor(stream, element) {
    this.stream = stream;
    this.wanted = new Map(); // topic -> handler
    this.active = new Map(); // topic -> unsubscribe
    this.visible = true;
    if (element && "IntersectionObserver" in window) {
      const observer = new IntersectionObserver((entries) => {
        for (const entry of entries) this.setVisible(entry.isIntersecting);
      });
      observer.observe(element);
    }
  }

  setVisible(visible) {
    this.visible = visible;
    this.sync();
  }

  /** Replace the panel's topics with the given map of topic -> handler. */
  set(topics) {
    this.wanted = new Map(topics);
    this.sync();
  }

  sync() {
    for (const [topic, unsubscribe] of [...this.active]) {
      if (!this.visible || !this.wanted.has(topic)) {
        unsubscribe();
        this.active.delete(topic);
      }
    }
    if (!this.visible) return;
    for (const [topic, handler] of this.wanted) {
      if (!this.active.has(topic)) this.active.set(topic, this.stream.subscribe(topic, handler));
    }
  }

  clear() {
    this.wanted.clear();
    this.sync();
  }
}
