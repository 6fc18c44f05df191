// The hosted player: negotiates on its own, shows the avatar, reports its state.
// Plain script, no build step: it runs as served in WebViews, Safari and desktop browsers.
(() => {
  "use strict";

  const RECONNECT_DELAYS_MS = [250, 1000, 2000, 4000, 8000];
  const DISCONNECTED_GRACE_MS = 3000; // "disconnected" often heals by itself
  const KEEPALIVE_FRACTION = 1 / 3; // of the session's idle TTL, while the page is visible
  const DEBUG_INTERVAL_MS = 1000;
  const MESSAGE_SOURCE = "avatar-player";
  const STATUS_TEXT = {
    connecting: "Connecting…",
    ready: "",
    live: "",
    ended: "This session has ended.",
    error: "Could not connect.",
  };

  const params = new URLSearchParams(location.search);
  const sessionId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const api = `${location.origin}/webrtc/sessions/${encodeURIComponent(sessionId)}`;
  const stage = document.getElementById("stage");
  const video = document.getElementById("avatar");
  const statusBox = document.getElementById("status");
  const unmuteButton = document.getElementById("unmute");
  const debugBox = document.getElementById("debug");

  let state = null;
  let pc = null;
  let generation = 0; // bumps with every new peer connection; stale callbacks check it
  let iceServers = [];
  let speaking = false;
  let utteranceId = null;
  let attempt = 0;
  let disconnectTimer = null;
  let keepaliveTimer = null;
  let audioEnabled = false;
  let framesShown = false;

  // --- telling the embedding app -------------------------------------------------------

  function post(message) {
    const full = { source: MESSAGE_SOURCE, session_id: sessionId, time: Date.now(), ...message };
    const text = JSON.stringify(full);
    if (window.ReactNativeWebView && window.ReactNativeWebView.postMessage) {
      window.ReactNativeWebView.postMessage(text);
    }
    if (window.parent && window.parent !== window) {
      window.parent.postMessage(full, "*");
    }
    window.dispatchEvent(new CustomEvent(MESSAGE_SOURCE, { detail: full }));
  }

  function setState(next, extra = {}) {
    if (state === next) return;
    state = next;
    stage.dataset.state = next;
    statusBox.textContent = extra.reason && next === "error" ? `${STATUS_TEXT.error} ${extra.reason}` : STATUS_TEXT[next];
    post({ type: "state", state: next, ...extra });
  }

  function setSpeaking(value, id) {
    if (speaking === value) return;
    speaking = value;
    utteranceId = value ? id : null;
    post({ type: "speaking", speaking: value, utterance_id: id || null });
    if (state === "ready" || state === "live") setState(value ? "live" : "ready");
  }

  // --- the session ----------------------------------------------------------------------

  async function lookUpSession() {
    const response = await fetch(api, { cache: "no-store" });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`session look-up failed (${response.status})`);
    return response.json();
  }

  function end(reason) {
    generation += 1;
    closePeer();
    clearTimeout(keepaliveTimer);
    clearTimeout(disconnectTimer);
    unmuteButton.hidden = true;
    if (speaking) setSpeaking(false, utteranceId);
    setState("ended", { reason });
  }

  function scheduleKeepalive(info) {
    clearTimeout(keepaliveTimer);
    const ttl = info && info.expires_in_seconds;
    if (!ttl) return;
    keepaliveTimer = setTimeout(async () => {
      if (state === "ended") return;
      if (document.visibilityState === "hidden") return scheduleKeepalive(info);
      try {
        const fresh = await lookUpSession();
        if (!fresh) return end("session_not_found");
        scheduleKeepalive(fresh);
      } catch (error) {
        scheduleKeepalive(info);
      }
    }, Math.max(5, ttl * KEEPALIVE_FRACTION) * 1000);
  }

  // --- WebRTC ---------------------------------------------------------------------------

  function closePeer() {
    if (pc) {
      pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null;
      pc.close();
      pc = null;
    }
  }

  function preferCodec(transceiver) {
    // H.264 constrained baseline where the browser prefers it (Safari) or ?codec=h264.
    const wanted = (params.get("codec") || (isSafari() ? "h264" : "vp8")).toLowerCase();
    if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const matches = (codec) => {
      const mime = codec.mimeType.toLowerCase();
      if (wanted === "h264") {
        return mime === "video/h264" && /profile-level-id=42e0/i.test(codec.sdpFmtpLine || "");
      }
      return mime === `video/${wanted}`;
    };
    const first = codecs.filter(matches);
    if (first.length) transceiver.setCodecPreferences([...first, ...codecs.filter((c) => !matches(c))]);
  }

  function isSafari() {
    const ua = navigator.userAgent;
    return /Safari\//.test(ua) && !/(Chrome|Chromium|CriOS|Android)\//.test(ua);
  }

  async function sendCandidate(init, gen) {
    if (gen !== generation) return;
    try {
      await fetch(`${api}/ice`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(init),
      });
    } catch (error) {
      // A lost candidate only matters if all are lost: the connection state says so.
    }
  }

  async function connect() {
    const gen = ++generation;
    closePeer();
    framesShown = false;
    const peer = new RTCPeerConnection({ iceServers });
    pc = peer;
    const videoTransceiver = peer.addTransceiver("video", { direction: "recvonly" });
    peer.addTransceiver("audio", { direction: "recvonly" });
    preferCodec(videoTransceiver);

    const events = peer.createDataChannel("events");
    events.onmessage = (event) => gen === generation && onServerEvent(JSON.parse(event.data));

    const stream = new MediaStream();
    peer.ontrack = (event) => {
      stream.addTrack(event.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      startPlayback();
    };

    let answered = false;
    const early = [];
    peer.onicecandidate = (event) => {
      const init = event.candidate ? event.candidate.toJSON() : { candidate: "" };
      if (answered) sendCandidate(init, gen);
      else early.push(init);
    };
    peer.onconnectionstatechange = () => gen === generation && onConnectionState(peer.connectionState);

    await peer.setLocalDescription(await peer.createOffer());
    const response = await fetch(`${api}/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sdp: peer.localDescription.sdp, type: "offer" }),
    });
    if (gen !== generation) return;
    if (response.status === 404) return end("session_not_found");
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.detail || `offer refused (${response.status})`);
    }
    await peer.setRemoteDescription(await response.json());
    answered = true;
    early.forEach((init) => sendCandidate(init, gen));
  }

  function onConnectionState(connectionState) {
    clearTimeout(disconnectTimer);
    if (connectionState === "connected") {
      attempt = 0;
      if (framesShown) setState(speaking ? "live" : "ready");
    } else if (connectionState === "disconnected") {
      disconnectTimer = setTimeout(() => reconnect("disconnected"), DISCONNECTED_GRACE_MS);
    } else if (connectionState === "failed" || connectionState === "closed") {
      reconnect(connectionState);
    }
  }

  async function reconnect(why) {
    if (state === "ended") return;
    const gen = ++generation;
    closePeer();
    if (speaking) setSpeaking(false, utteranceId);
    setState("connecting", { reconnecting: true, reason: why });
    const delay = RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)];
    attempt += 1;
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (gen !== generation) return;
    try {
      const info = await lookUpSession();
      if (!info) return end("session_not_found");
      iceServers = info.ice_servers;
      await connect();
    } catch (error) {
      if (gen === generation) reconnect(String(error.message || error));
    }
  }

  function onServerEvent(message) {
    switch (message.type) {
      case "speaking_started":
        setSpeaking(true, message.utterance_id);
        break;
      case "speaking_ended":
      case "utterance_cancelled":
        setSpeaking(false, message.utterance_id);
        break;
      case "session_ended":
        end(message.reason || "session_ended");
        break;
      default:
        break;
    }
  }

  // --- playback and the sound unlock ----------------------------------------------------

  function onFirstFrame() {
    if (framesShown) return;
    framesShown = true;
    if (pc && pc.connectionState === "connected") setState(speaking ? "live" : "ready");
  }

  function watchFrames() {
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback(() => onFirstFrame());
    } else {
      video.addEventListener("playing", onFirstFrame, { once: true });
    }
  }

  async function startPlayback() {
    watchFrames();
    try {
      await video.play(); // muted: always allowed
    } catch (error) {
      // Retried by the tap below.
    }
    if (!audioEnabled) await tryEnableAudio(false);
  }

  async function tryEnableAudio(fromGesture) {
    video.muted = false;
    try {
      await video.play();
      audioEnabled = !video.muted && !video.paused;
    } catch (error) {
      audioEnabled = false;
    }
    if (!audioEnabled) {
      // Blocked until a tap (iOS and Safari above all): keep the video running muted.
      video.muted = true;
      video.play().catch(() => {});
    }
    unmuteButton.hidden = audioEnabled;
    post({ type: "audio", enabled: audioEnabled, from_gesture: fromGesture });
  }

  unmuteButton.addEventListener("click", () => tryEnableAudio(true));

  // --- ?debug=1 -----------------------------------------------------------------------

  function startDebug() {
    debugBox.hidden = false;
    let last = null;
    setInterval(async () => {
      if (!pc) return;
      const stats = await pc.getStats();
      const now = { video: null, audio: null, pair: null, time: performance.now() };
      stats.forEach((report) => {
        if (report.type === "inbound-rtp") now[report.kind] = report;
        if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") now.pair = report;
      });
      const lines = [`state    ${state}${speaking ? " (speaking)" : ""}`, `pc       ${pc.connectionState}`];
      if (now.video) {
        const v = now.video;
        const seconds = last && last.video ? (now.time - last.time) / 1000 : 0;
        const kbps = seconds ? ((v.bytesReceived - last.video.bytesReceived) * 8) / seconds / 1000 : 0;
        lines.push(
          `video    ${v.frameWidth || "?"}x${v.frameHeight || "?"} ${(v.framesPerSecond || 0).toFixed(1)} fps ${kbps.toFixed(0)} kbit/s`,
          `decoded  ${v.framesDecoded} dropped ${v.framesDropped || 0}`,
          `jitter   video ${((v.jitter || 0) * 1000).toFixed(1)} ms`,
        );
      }
      if (now.audio) {
        const a = now.audio;
        lines.push(`audio    jitter ${((a.jitter || 0) * 1000).toFixed(1)} ms, level ${(a.audioLevel || 0).toFixed(3)}`);
      }
      if (now.pair) lines.push(`rtt      ${((now.pair.currentRoundTripTime || 0) * 1000).toFixed(1)} ms`);
      lines.push(`sound    ${audioEnabled ? "on" : "muted"}`);
      debugBox.textContent = lines.join("\n");
      last = now;
    }, DEBUG_INTERVAL_MS);
  }

  // --- start ---------------------------------------------------------------------------

  async function main() {
    setState("connecting");
    if (params.get("debug") === "1") startDebug();
    try {
      const info = await lookUpSession();
      if (!info) return end("session_not_found");
      iceServers = info.ice_servers;
      scheduleKeepalive(info);
      await connect();
    } catch (error) {
      setState("error", { reason: String(error.message || error) });
      reconnect("error");
    }
  }

  window.addEventListener("pagehide", () => closePeer());
  main();
})();
