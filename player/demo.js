// The demo page: start a session, watch it in the player, make it speak, end it.
// A separate file, not inline: the page's Content-Security-Policy allows no inline script.
(() => {
  "use strict";
  const KEY_STORAGE = "avatar-server-api-key";
  const $ = (id) => document.getElementById(id);
  let session = null;
  const log = (text) => { $("log").textContent = text; };

  $("key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  // The API key, when the server has keys (README, "Access").
  const call = (path, options = {}) => {
    const key = $("key").value.trim();
    return fetch(path, { ...options, headers: key ? { Authorization: `Bearer ${key}` } : {} });
  };

  async function loadAvatars() {
    const response = await call("/avatars");
    const body = await response.json();
    if (!response.ok) return log(body.detail);
    $("avatar").replaceChildren();
    for (const avatar of body.avatars) {
      if (avatar.state === "ready") $("avatar").add(new Option(avatar.avatar_id, avatar.avatar_id));
    }
    const health = await (await call("/health")).json();
    log(`Engine: ${health.engine}. Start a session, then pick an audio file to make the avatar speak it.`);
  }

  $("key").onchange = () => {
    sessionStorage.setItem(KEY_STORAGE, $("key").value.trim());
    loadAvatars();
  };

  $("start").onclick = async () => {
    const response = await call(`/webrtc/sessions/create?avatar_id=${encodeURIComponent($("avatar").value)}`, { method: "POST" });
    const body = await response.json();
    if (!response.ok) return log(body.detail);
    session = body;
    $("player").src = body.player_url;
    $("file").disabled = $("stop").disabled = false;
    log(`Session ${body.session_id}`);
  };

  $("file").onchange = async () => {
    const file = $("file").files[0];
    if (!file || !session) return;
    const form = new FormData();
    form.append("audio_file", file);
    const response = await call(`/webrtc/sessions/${session.session_id}/stream`, { method: "POST", body: form });
    const body = await response.json();
    log(response.ok ? `Speaking ${body.duration_seconds.toFixed(1)} s of ${file.name}` : body.detail);
    $("file").value = "";
  };

  $("stop").onclick = async () => {
    if (!session) return;
    await call(`/webrtc/sessions/${session.session_id}`, { method: "DELETE" });
    $("file").disabled = $("stop").disabled = true;
    log("Session ended.");
    session = null;
  };

  window.addEventListener("message", (event) => {
    if (event.data && event.data.source === "avatar-player" && event.data.type === "state") {
      log(`Player: ${event.data.state}${event.data.reason ? ` (${event.data.reason})` : ""}`);
    }
  });

  loadAvatars();
})();
