// The signal viewer: lists one user's signals newest first and keeps the list live over SSE.
// Plain DOM, no framework, no build step. Text from the API only ever goes through textContent.
"use strict";

(() => {
  const CREDENTIALS = "alerts.viewer.credentials";
  const PAGE_SIZE = 30;
  const RECONNECT_MAX_MS = 15000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    who: $("who"),
    live: $("live"),
    signOut: $("sign-out"),
    signIn: $("sign-in"),
    signInForm: $("sign-in-form"),
    signInError: $("sign-in-error"),
    viewer: $("viewer"),
    filters: $("filters"),
    stats: $("stats"),
    zone: $("zone"),
    indicators: $("indicators"),
    tickers: $("tickers"),
    error: $("error"),
    empty: $("empty"),
    list: $("signals"),
    more: $("more"),
    lightbox: $("lightbox"),
    card: $("signal-card"),
  };

  let credentials = null;
  let nextPageToken = "";
  let lastEventId = "";
  let stream = null; // AbortController of the running SSE request
  let listGeneration = 0; // bumps on every reload, so a stale response is dropped
  let listLoaded = false;
  const cards = new Map(); // signal id -> {element, signal}
  const suggested = new Set(); // "<datalist id>:<value>" already offered in a filter's suggestions

  // ---- API values: accept snake_case or camelCase keys, and enums as "COMPLETED" or full proto names.
  const pick = (object, ...names) => {
    for (const name of names) {
      if (object && object[name] !== undefined && object[name] !== null) return object[name];
    }
    return "";
  };
  const enumName = (value, prefix) =>
    String(value || "").toUpperCase().replace(prefix, "").toLowerCase();

  function normalise(raw) {
    return {
      id: String(pick(raw, "signal_id", "signalId", "id")),
      ticker: pick(raw, "ticker"),
      indicator: pick(raw, "indicator"),
      indicatorKey: pick(raw, "indicator_key", "indicatorKey"),
      delayedFeed: pick(raw, "delayed_feed", "delayedFeed") === true,
      price: pick(raw, "price"),
      type: pick(raw, "signal_type", "signalType"),
      interval: pick(raw, "interval"),
      result: enumName(pick(raw, "result"), "SIGNAL_RESULT_") || "pending",
      status: enumName(pick(raw, "screenshot_status", "screenshotStatus"), "SCREENSHOT_STATUS_"),
      error: pick(raw, "screenshot_error", "screenshotError"),
      url: pick(raw, "screenshot_url", "screenshotUrl"),
      createdAt: pick(raw, "created_at", "createdAt"),
      updatedAt: pick(raw, "updated_at", "updatedAt"),
      deliveries: (pick(raw, "deliveries") || []).map((delivery) => ({
        channel: enumName(pick(delivery, "channel"), "NOTIFICATION_CHANNEL_"),
        kind: enumName(pick(delivery, "kind"), "NOTIFICATION_KIND_"),
        status: enumName(pick(delivery, "status"), "DELIVERY_STATUS_"),
        withPhoto: Boolean(pick(delivery, "with_photo", "withPhoto")),
        error: pick(delivery, "last_error", "lastError"),
      })),
    };
  }

  // One line per channel: how the alert went, and what followed it (the chart, the outcome edit).
  function describeDeliveries(deliveries) {
    const channels = new Map();
    for (const delivery of deliveries) {
      if (!channels.has(delivery.channel)) channels.set(delivery.channel, []);
      channels.get(delivery.channel).push(delivery);
    }
    const lines = [];
    for (const [channel, items] of channels) {
      const alert = items.find((item) => item.kind === "alert");
      if (!alert) continue;
      let line = `${channel}: ${alert.status}`;
      if (alert.status === "delivered") line += alert.withPhoto ? " with chart" : "";
      else if (alert.error) line += ` (${alert.error})`;
      for (const item of items) {
        if (item.kind !== "alert" && item.status === "delivered") line += item.kind === "photo" ? ", chart sent" : ", outcome edited";
      }
      lines.push(line);
    }
    return lines.join("; ");
  }

  // The user an access token is for: its payload's "sub". Only read here, never trusted: the service
  // verifies the token on every call.
  function tokenUser(token) {
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const sub = JSON.parse(atob(payload.padEnd(Math.ceil(payload.length / 4) * 4, "="))).sub;
      return typeof sub === "string" ? sub : "";
    } catch {
      return "";
    }
  }

  // ---- credentials: from the URL fragment once (then removed from the address bar), else sessionStorage.
  // A link carries an access token (#token=...) or a user id with a key scoped to it (#user=...&key=...).
  function credentialsFromFragment(fragment) {
    const token = (fragment.get("token") || "").trim();
    if (token && tokenUser(token)) return { user: tokenUser(token), key: token };
    if (fragment.get("user") && fragment.get("key")) {
      return { user: fragment.get("user").trim(), key: fragment.get("key").trim() };
    }
    return null;
  }

  function loadCredentials() {
    const found = credentialsFromFragment(new URLSearchParams(location.hash.slice(1)));
    if (found) {
      sessionStorage.setItem(CREDENTIALS, JSON.stringify(found));
      history.replaceState(null, "", location.pathname + location.search);
      return found;
    }
    try {
      return JSON.parse(sessionStorage.getItem(CREDENTIALS) || "null");
    } catch {
      return null;
    }
  }

  function showSignIn(message) {
    stopStream();
    credentials = null;
    sessionStorage.removeItem(CREDENTIALS);
    ui.viewer.hidden = true;
    ui.who.hidden = true;
    ui.signOut.hidden = true;
    ui.signIn.hidden = false;
    ui.signInError.hidden = !message;
    ui.signInError.textContent = message || "";
    setLive("off", "signed out");
  }

  function open(found) {
    credentials = found;
    ui.signIn.hidden = true;
    ui.viewer.hidden = false;
    ui.who.hidden = false;
    ui.who.textContent = `user ${found.user}`;
    ui.signOut.hidden = false;
    listLoaded = false;
    lastEventId = "";
    loadStats();
    startStream();
  }

  class AuthError extends Error {}

  async function api(path, init = {}) {
    const response = await fetch(path, {
      ...init,
      headers: { ...(init.headers || {}), Authorization: `Bearer ${credentials.key}` },
      cache: "no-store",
    });
    if (response.status === 401) throw new AuthError("This key or link is not accepted (expired or revoked?).");
    // Every call here names the user: a user this key may not read answers 404, like one that does not exist.
    if (response.status === 403 || response.status === 404) {
      throw new AuthError("This key may not read this user.");
    }
    return response;
  }

  const userPath = (suffix) => `/api/users/${encodeURIComponent(credentials.user)}/${suffix}`;

  // A date picked in the filter is a whole day in the trader's own time zone; the API takes exclusive
  // UTC bounds, so "from D" is after the instant before D's midnight and "to D" is before the next midnight.
  const localMidnight = (day) => new Date(`${day}T00:00:00`);

  function currentFilters() {
    const data = new FormData(ui.filters);
    const from = String(data.get("from") || "");
    const to = String(data.get("to") || "");
    const before = to ? localMidnight(to) : null;
    if (before) before.setDate(before.getDate() + 1);
    return {
      ticker: String(data.get("ticker") || "").trim().toUpperCase(),
      indicator: String(data.get("indicator") || "").trim(),
      result: String(data.get("result") || ""),
      created_after: from ? new Date(localMidnight(from).getTime() - 1).toISOString() : "",
      created_before: before ? before.toISOString() : "",
    };
  }

  function matches(signal, filters) {
    if (filters.ticker && signal.ticker.toUpperCase() !== filters.ticker) return false;
    // The server also matches other spellings of a catalog indicator; a live event can only be compared
    // with the name it carries and the catalog's key.
    if (filters.indicator && ![signal.indicator, signal.indicatorKey].includes(filters.indicator)) return false;
    if (filters.result && signal.result !== filters.result) return false;
    const created = new Date(signal.createdAt).getTime();
    if (filters.created_after && !(created > new Date(filters.created_after).getTime())) return false;
    if (filters.created_before && !(created < new Date(filters.created_before).getTime())) return false;
    return true;
  }

  // ---- the user's totals, refreshed (at most once a second) while events arrive
  let statsTimer = 0;
  function refreshStats() {
    clearTimeout(statsTimer);
    statsTimer = setTimeout(loadStats, 1000);
  }

  async function loadStats() {
    try {
      const response = await api(userPath("stats"));
      if (!response.ok) return;
      const stats = await response.json();
      const show = (name, value) => {
        ui.stats.querySelector(`[data-stat="${name}"]`).textContent = value;
      };
      show("total", String(pick(stats, "total_signals", "totalSignals") || 0));
      show("month", String(pick(stats, "this_month", "thisMonth") || 0));
      const resolved = Number(pick(stats, "wins") || 0) + Number(pick(stats, "losses") || 0);
      const rate = Number(pick(stats, "win_rate", "winRate") || 0);
      show("winrate", resolved ? `${rate.toFixed(1)} % of ${resolved}` : "no results yet");
      show("pending", String(pick(stats, "screenshots_pending", "screenshotsPending") || 0));
    } catch (error) {
      if (error instanceof AuthError) showSignIn(error.message);
    }
  }

  // ---- the list
  async function reload() {
    const generation = ++listGeneration;
    nextPageToken = "";
    for (const { element } of cards.values()) element.remove();
    cards.clear();
    await loadPage(generation);
  }

  async function loadPage(generation) {
    const filters = currentFilters();
    const query = new URLSearchParams({ page_size: String(PAGE_SIZE) });
    for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
    if (nextPageToken) query.set("page_token", nextPageToken);
    ui.more.disabled = true;
    try {
      const response = await api(`${userPath("signals")}?${query}`);
      if (!response.ok) throw new Error(`The signals could not be loaded (HTTP ${response.status}).`);
      const body = await response.json();
      if (generation !== listGeneration) return;
      for (const raw of pick(body, "signals", "items") || []) upsert(normalise(raw), { append: true });
      nextPageToken = pick(body, "next_page_token", "nextPageToken");
      listLoaded = true;
      showError("");
    } catch (error) {
      if (error instanceof AuthError) return showSignIn(error.message);
      showError(error.message);
    } finally {
      ui.more.disabled = false;
      ui.more.hidden = !nextPageToken;
      ui.empty.hidden = cards.size > 0;
    }
  }

  function showError(message) {
    ui.error.hidden = !message;
    ui.error.textContent = message;
  }

  const newer = (a, b) => String(a.updatedAt || "") >= String(b.updatedAt || "");

  function upsert(signal, { append = false, live = false } = {}) {
    suggest(ui.indicators, signal.indicatorKey || signal.indicator);
    suggest(ui.tickers, signal.ticker);
    const known = cards.get(signal.id);
    if (known) {
      if (!newer(signal, known.signal)) return;
      known.signal = signal;
      fill(known.element, signal);
      return;
    }
    if (live && !matches(signal, currentFilters())) return;
    const element = ui.card.content.firstElementChild.cloneNode(true);
    element.dataset.id = signal.id;
    fill(element, signal);
    cards.set(signal.id, { element, signal });
    if (append) {
      ui.list.append(element);
    } else {
      element.classList.add("fresh");
      placeByTime(element, signal);
    }
    ui.empty.hidden = true;
  }

  function suggest(list, value) {
    if (!value || suggested.has(`${list.id}:${value}`)) return;
    suggested.add(`${list.id}:${value}`);
    const option = document.createElement("option");
    option.value = value;
    list.append(option);
  }

  // Live events usually belong at the top, but a replayed one may be older than what is shown.
  function placeByTime(element, signal) {
    for (const child of ui.list.children) {
      const other = cards.get(child.dataset.id);
      if (other && String(other.signal.createdAt) <= String(signal.createdAt)) {
        ui.list.insertBefore(element, child);
        return;
      }
    }
    ui.list.append(element);
  }

  // Times are the trader's own (the browser's zone), and say which zone that is.
  const TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZoneName: "short",
  });
  const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

  const STATUS_TEXT = {
    pending: "Screenshot queued…",
    processing: "Capturing the chart…",
    skipped: "No chart: the message names no ticker",
    expired: "Screenshot removed by retention",
    failed: "Screenshot failed",
  };

  function tone(type) {
    const text = type.toLowerCase();
    if (/(alcist|bull|buy|compra|long|largo|up\b|alza|oversold|sobreventa|demand|demanda)/.test(text)) return "up";
    if (/(bajist|bear|sell|venta|short|corto|down\b|baja|overbought|sobrecompra|supply|oferta)/.test(text)) return "down";
    return "";
  }

  function fill(element, signal) {
    const text = (selector, value) => {
      element.querySelector(selector).textContent = value;
    };
    text(".ticker", signal.ticker || "(no ticker)");
    const type = element.querySelector(".type");
    type.textContent = signal.type || "unknown";
    type.dataset.tone = tone(signal.type || "");
    text(
      ".indicator",
      [signal.indicator || "unknown indicator", signal.interval && `${signal.interval}`, signal.delayedFeed && "delayed feed"]
        .filter(Boolean)
        .join(" · "),
    );
    text(".price", signal.price || "—");
    const result = element.querySelector(".result");
    result.textContent = signal.result;
    result.dataset.result = signal.result;
    const notified = describeDeliveries(signal.deliveries || []);
    element.querySelector(".notified").hidden = !notified;
    text(".deliveries", notified);
    const when = element.querySelector(".when");
    when.dateTime = signal.createdAt;
    when.textContent = signal.createdAt ? TIME_FORMAT.format(new Date(signal.createdAt)) : "";

    const shot = element.querySelector(".shot");
    const image = shot.querySelector("img");
    const state = shot.querySelector(".shot-state");
    shot.dataset.status = signal.status;
    if (signal.status === "completed" && signal.url) {
      if (image.dataset.src !== signal.url) {
        image.dataset.src = signal.url;
        image.src = signal.url;
        image.alt = `Chart of ${signal.ticker} when the alert fired`;
      }
      image.hidden = false;
      state.textContent = "";
      shot.disabled = false;
    } else {
      image.hidden = true;
      image.removeAttribute("src");
      delete image.dataset.src;
      const reason = signal.status === "failed" && signal.error ? `: ${signal.error.replaceAll("_", " ")}` : "";
      state.textContent = (STATUS_TEXT[signal.status] || "No screenshot") + reason;
      shot.disabled = true;
    }
  }

  function enlarge(element) {
    const known = cards.get(element.dataset.id);
    if (!known || known.signal.status !== "completed") return;
    const image = ui.lightbox.querySelector("img");
    image.src = known.signal.url;
    image.alt = `Chart of ${known.signal.ticker}`;
    ui.lightbox.querySelector(".caption").textContent =
      [known.signal.ticker, known.signal.type, known.signal.price, known.signal.indicator].filter(Boolean).join(" · ");
    ui.lightbox.showModal();
  }

  // ---- live updates: Server-Sent Events read with fetch, so the key travels in a header.
  function setLive(state, label) {
    ui.live.dataset.state = state;
    ui.live.textContent = label;
  }

  function stopStream() {
    if (stream) stream.abort();
    stream = null;
  }

  function startStream() {
    stopStream();
    const controller = new AbortController();
    stream = controller;
    follow(controller).catch(() => {});
  }

  async function follow(controller) {
    let delay = 1000;
    while (!controller.signal.aborted) {
      setLive("connecting", "connecting…");
      try {
        const headers = { Accept: "text/event-stream" };
        if (lastEventId) headers["Last-Event-ID"] = lastEventId;
        const response = await api(userPath("events"), { headers, signal: controller.signal });
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        setLive("live", "live");
        delay = 1000;
        // The stream is subscribed before the list is read, so nothing committed in between is missed;
        // without a cursor to resume from, a reconnect reads the list again for the same reason.
        if (!lastEventId || !listLoaded) reload();
        await readEvents(response.body, controller);
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof AuthError) return showSignIn(error.message);
        if (!listLoaded) reload();
      }
      if (controller.signal.aborted) return;
      setLive("connecting", "reconnecting…");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
    }
  }

  async function readEvents(body, controller) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { id: "", type: "", data: [] };
    while (!controller.signal.aborted) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {
          if (event.data.length) dispatch(event);
          event = { id: "", type: "", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") event.data.push(value);
        else if (field === "event") event.type = value;
        else if (field === "id") event.id = value;
      }
    }
  }

  function dispatch(event) {
    if (event.id) lastEventId = event.id;
    let payload;
    try {
      payload = JSON.parse(event.data.join("\n"));
    } catch {
      return;
    }
    const raw = payload && (payload.signal || (pick(payload, "signal_id", "signalId") ? payload : null));
    if (raw) {
      upsert(normalise(raw), { live: true });
      refreshStats();
    }
  }

  // ---- wiring
  ui.signInForm.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    const data = new FormData(ui.signInForm);
    const found = { user: String(data.get("user")).trim(), key: String(data.get("key")).trim() };
    sessionStorage.setItem(CREDENTIALS, JSON.stringify(found));
    ui.signInForm.reset();
    open(found);
  });
  ui.signOut.addEventListener("click", () => showSignIn(""));
  let filterTimer = 0;
  const refilter = () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(reload, 250);
  };
  ui.filters.addEventListener("input", refilter);
  ui.filters.addEventListener("reset", () => setTimeout(reload, 0));
  ui.filters.addEventListener("submit", (submitted) => {
    submitted.preventDefault();
    reload();
  });
  ui.more.addEventListener("click", () => loadPage(listGeneration));
  ui.list.addEventListener("click", (clicked) => {
    const shot = clicked.target.closest(".shot");
    if (shot) enlarge(shot.closest(".signal"));
  });
  ui.lightbox.addEventListener("click", (clicked) => {
    if (clicked.target === ui.lightbox || clicked.target.tagName === "IMG") ui.lightbox.close();
  });
  window.addEventListener("hashchange", () => {
    const found = loadCredentials();
    if (found) open(found);
  });

  ui.zone.textContent = `Times in ${ZONE}`;
  const found = loadCredentials();
  if (found) open(found);
  else showSignIn("");
})();
