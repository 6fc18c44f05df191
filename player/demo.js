// The demo page: start a session, watch it in the player, make it speak (text, a file,
// the microphone, a chat with an LLM), interrupt it, and watch its events.
// A separate file, not inline: the page's Content-Security-Policy allows no inline script.
(() => {
  "use strict";
  const KEY_STORAGE = "avatar-server-api-key";
  const MAX_EVENTS = 300;
  const $ = (id) => document.getElementById(id);
  const SESSION_CONTROLS = ["stop", "mode", "text", "say", "file", "mic", "interrupt"];
  const CHAT_CONTROLS = ["chat-message", "chat-send"];
  let session = null;
  let events = null; // the AbortController of the event stream
  let recorder = null;
  let chatReason = null; // why chat is unavailable, in the server's words; null: it works
  const log = (text) => { $("log").textContent = text; };

  $("key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  // The API key, when the server has keys (README, "Access").
  const authorization = () => {
    const key = $("key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  };
  const call = (path, options = {}) =>
    fetch(path, { ...options, headers: { ...authorization(), ...(options.headers || {}) } });
  const postJson = (path, body) =>
    call(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const sessionPath = (end) => `/webrtc/sessions/${session.session_id}/${end}`;
  const answer = async (response) => {
    try { return await response.json(); } catch { return { detail: `HTTP ${response.status}` }; }
  };

  function enable(ids, on) {
    for (const id of ids) $(id).disabled = !on;
  }

  function showChat() {
    enable(CHAT_CONTROLS, Boolean(session) && chatReason === null);
    $("chat-note").hidden = chatReason === null;
    $("chat-note").textContent = chatReason || "";
  }

  async function loadAvatars() {
    const response = await call("/avatars");
    const body = await answer(response);
    if (!response.ok) return log(body.detail);
    $("avatar").replaceChildren();
    for (const avatar of body.avatars) {
      if (avatar.state === "ready") $("avatar").add(new Option(avatar.avatar_id, avatar.avatar_id));
    }
    const health = await (await call("/health")).json();
    chatReason = health.llm_unavailable_reason || null;
    showChat();
    if (!navigator.mediaDevices || !window.MediaRecorder) $("mic").title = "This browser cannot record here (the page needs https or localhost).";
    log(`Engine: ${health.engine}. Start a session, then make the avatar speak: type text, pick a file or talk.`);
  }

  // --- the events log -------------------------------------------------------------------

  function addEvent(type, data) {
    const item = document.createElement("li");
    item.dataset.type = type;
    const name = document.createElement("span");
    name.className = type === "error" ? "type error" : "type";
    name.textContent = type;
    item.append(name, document.createTextNode(JSON.stringify(data)));
    $("events").append(item);
    while ($("events").children.length > MAX_EVENTS) $("events").firstChild.remove();
    item.scrollIntoView({ block: "nearest" });
  }

  // EventSource cannot send an Authorization header and /events takes an API key, so the
  // stream is fetched and its server-sent events parsed here.
  async function followEvents(sessionId) {
    events = new AbortController();
    const { signal } = events;
    try {
      const response = await call(`/webrtc/sessions/${sessionId}/events`, { signal, headers: { Accept: "text/event-stream" } });
      if (!response.ok) return addEvent("error", await answer(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      addEvent("stream_ended", { session_id: sessionId });
    } catch (error) {
      if (!signal.aborted) addEvent("error", { detail: `event stream: ${error.message}` });
    }
  }

  function dispatch(block) {
    let type = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // a heartbeat
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let parsed = data.join("\n");
    try { parsed = JSON.parse(parsed); } catch { /* shown as text */ }
    addEvent(type, parsed);
  }

  // --- the session ----------------------------------------------------------------------

  $("key").onchange = () => {
    sessionStorage.setItem(KEY_STORAGE, $("key").value.trim());
    loadAvatars();
  };

  $("start").onclick = async () => {
    const response = await call(`/webrtc/sessions/create?avatar_id=${encodeURIComponent($("avatar").value)}`, { method: "POST" });
    const body = await answer(response);
    if (!response.ok) return log(body.detail);
    if (session) endSession(true);
    session = body;
    $("player").src = body.player_url;
    enable(SESSION_CONTROLS, true);
    showChat();
    followEvents(body.session_id);
    log(`Session ${body.session_id}`);
  };

  // The event stream of a deleted session ends by itself, after its session_ended.
  function endSession(abortEvents) {
    if (abortEvents && events) events.abort();
    if (recorder && recorder.state === "recording") recorder.stop();
    enable(SESSION_CONTROLS, false);
    session = null;
    showChat();
  }

  $("stop").onclick = async () => {
    if (!session) return;
    const path = `/webrtc/sessions/${session.session_id}`;
    endSession(false);
    const response = await call(path, { method: "DELETE" });
    if (!response.ok && events) events.abort();
    log("Session ended.");
  };

  // --- ways to speak --------------------------------------------------------------------

  const mode = () => $("mode").value;
  const spoken = (body, what) => {
    const position = body.queue_position ? `, queued at ${body.queue_position}` : "";
    return `Speaking ${body.duration_seconds.toFixed(1)} s of ${what}${position} (${body.utterance_id})`;
  };

  $("say-form").onsubmit = async (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!session || !text) return;
    const response = await postJson(sessionPath("say"), { text, mode: mode() });
    const body = await answer(response);
    log(response.ok ? spoken(body, `"${body.text}"`) : body.detail);
    if (response.ok) $("text").value = "";
  };

  async function upload(blob, name) {
    const form = new FormData();
    form.append("audio_file", blob, name);
    form.append("mode", mode());
    const response = await call(sessionPath("stream"), { method: "POST", body: form });
    const body = await answer(response);
    log(response.ok ? spoken(body, name) : body.detail);
  }

  $("file").onchange = async () => {
    const file = $("file").files[0];
    if (!file || !session) return;
    await upload(file, file.name);
    $("file").value = "";
  };

  // The microphone: each recording is uploaded when it ends.
  $("mic").onclick = async () => {
    if (recorder && recorder.state === "recording") {
      recorder.stop();
      return;
    }
    if (!navigator.mediaDevices || !window.MediaRecorder) return log($("mic").title);
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      return log(`No microphone: ${error.message}`);
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
    recorder.onstop = () => {
      for (const track of stream.getTracks()) track.stop();
      $("mic").textContent = "Talk";
      $("mic").classList.remove("recording");
      const type = recorder.mimeType || "audio/webm";
      const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      if (session && chunks.length) upload(new Blob(chunks, { type }), `microphone.${extension}`);
    };
    recorder.start();
    $("mic").textContent = "Stop and send";
    $("mic").classList.add("recording");
    log("Recording: press the button again to send it.");
  };

  $("interrupt").onclick = async () => {
    if (!session) return;
    const response = await call(sessionPath("interrupt"), { method: "POST" });
    const body = await answer(response);
    if (!response.ok) return log(body.detail);
    const cut = body.interrupted;
    const dropped = body.dropped_utterance_ids.length ? `; dropped ${body.dropped_utterance_ids.join(", ")}` : "";
    log(cut ? `Interrupted ${cut.utterance_id} after ${cut.played_seconds.toFixed(2)} s${dropped}` : "Nothing to interrupt.");
  };

  $("chat-form").onsubmit = async (event) => {
    event.preventDefault();
    const message = $("chat-message").value.trim();
    if (!session || !message) return;
    $("chat-message").value = "";
    log(`You: ${message}`);
    const response = await postJson(sessionPath("chat"), { message, mode: mode() });
    const body = await answer(response);
    if (response.ok) return log(`Avatar: ${body.reply}`);
    if (response.status === 503 && /LLM/.test(body.detail)) {
      chatReason = body.detail;
      showChat();
    }
    log(body.detail);
  };

  $("clear-events").onclick = () => $("events").replaceChildren();

  window.addEventListener("message", (event) => {
    if (event.data && event.data.source === "avatar-player" && event.data.type === "state") {
      log(`Player: ${event.data.state}${event.data.reason ? ` (${event.data.reason})` : ""}`);
    }
  });

  loadAvatars();
})();
