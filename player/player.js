// The hosted player: negotiates on its own, shows the avatar, reports its state.
// Plain script, no build step: it runs as served in WebViews, Safari and desktop browsers.
(() => {
  "use strict";

  const RECONNECT_DELAYS_MS = [250, 1000, 2000, 4000, 8000];
  // Beyond the server's reconnect grace (20 s by default) a session is gone anyway.
  const GIVE_UP_AFTER_MS = 60000;
  const DISCONNECTED_GRACE_MS = 3000; // "disconnected" often heals by itself
  const KEEPALIVE_FRACTION = 1 / 3; // of the session's idle TTL, while the page is visible
  const MIN_KEEPALIVE_MS = 5000;
  const DEBUG_INTERVAL_MS = 1000;
  const MESSAGE_SOURCE = "avatar-player";
  // Constrained baseline (42e0..): what Safari and iOS decode in hardware; aiortc sends it.
  const H264_CONSTRAINED_BASELINE = /profile-level-id=42e0/i;
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
  // The session's token (player_url's `token`) lets this page's calls in; none on an open server.
  const token = params.get("token");
  const authorization = token ? { Authorization: `Bearer ${token}` } : {};
  const stage = document.getElementById("stage");
  const video = document.getElementById("avatar");
  const statusBox = document.getElementById("status");
  const unlock = document.getElementById("unlock");
  const debugBox = document.getElementById("debug");

  let state = null;
  let pc = null;
  let generation = 0; // bumps with every new peer connection; stale callbacks check it
  let iceServers = [];
  let speaking = false;
  let utteranceId = null;
  let attempt = 0;
  let failingSince = null; // when the connection was last lost, until it is back
  let disconnectTimer = null;
  let keepaliveTimer = null;
  let audioEnabled = null;
  let unlocking = null; // the sound unlock in progress
  let framesShown = false;

  class FatalError extends Error {} // retrying cannot help (e.g. the offer is refused)

  // --- telling the embedding app -------------------------------------------------------

  function post(message) {
    const full = { source: MESSAGE_SOURCE, session_id: sessionId, time: Date.now(), ...message };
    if (window.ReactNativeWebView && window.ReactNativeWebView.postMessage) {
      window.ReactNativeWebView.postMessage(JSON.stringify(full)); // it takes strings only
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
    statusBox.textContent = next === "error" && extra.reason ? `${STATUS_TEXT.error} ${extra.reason}` : STATUS_TEXT[next];
    post({ type: "state", state: next, ...extra });
  }

  function setSpeaking(value, id) {
    if (speaking === value) return;
    speaking = value;
    utteranceId = value ? id : null;
    post({ type: "speaking", speaking: value, utterance_id: id || null });
    if (state === "ready" || state === "live") setState(value ? "live" : "ready");
  }

  // Leaving ready/live: the state changes first, so that no "ready" slips in between.
  function leave(next, extra) {
    const wasSpeaking = speaking ? utteranceId : undefined;
    setState(next, extra);
    if (wasSpeaking !== undefined) setSpeaking(false, wasSpeaking);
  }

  // --- the session ----------------------------------------------------------------------

  async function lookUpSession() {
    const response = await fetch(api, { cache: "no-store", headers: authorization });
    if (response.status === 404) return null;
    if (response.status === 401 || response.status === 403) {
      const body = await response.json().catch(() => ({}));
      throw new FatalError(body.detail || `not allowed (${response.status})`);
    }
    if (!response.ok) throw new Error(`session look-up failed (${response.status})`);
    return response.json();
  }

  function stop() {
    generation += 1;
    closePeer();
    clearTimeout(keepaliveTimer);
    clearTimeout(disconnectTimer);
    unlock.hidden = true;
    video.srcObject = null;
  }

  function end(reason) {
    if (state === "ended") return;
    stop();
    leave("ended", { reason });
  }

  function fail(reason) {
    stop();
    leave("error", { reason });
  }

  function scheduleKeepalive(info) {
    // Reading the session resets its idle timer: a visible player keeps its session.
    clearTimeout(keepaliveTimer);
    const ttl = info && info.expires_in_seconds;
    if (!ttl) return;
    keepaliveTimer = setTimeout(async () => {
      if (state === "ended" || state === "error") return;
      if (document.visibilityState === "hidden") return scheduleKeepalive(info);
      try {
        const fresh = await lookUpSession();
        if (!fresh) return end("session_not_found");
        scheduleKeepalive(fresh);
      } catch (error) {
        scheduleKeepalive(info);
      }
    }, Math.max(MIN_KEEPALIVE_MS, ttl * KEEPALIVE_FRACTION * 1000));
  }

  // --- WebRTC ---------------------------------------------------------------------------

  function closePeer() {
    if (pc) {
      pc.ontrack = pc.onicecandidate = pc.onconnectionstatechange = null;
      pc.close();
      pc = null;
    }
  }

  function wantedCodec() {
    const asked = (params.get("codec") || "").toLowerCase();
    if (asked === "h264" || asked === "vp8") return asked;
    return prefersH264() ? "h264" : "vp8";
  }

  // Safari, and every iOS browser and WebView (WKWebView's user agent has no "Safari/"),
  // decodes H.264 in hardware and VP8 poorly or not at all.
  function prefersH264() {
    const ua = navigator.userAgent;
    return /AppleWebKit\//.test(ua) && !/(Chrome|Chromium|Android)\//.test(ua);
  }

  function preferCodec(transceiver, wanted) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const rank = (codec) => {
      const mime = codec.mimeType.toLowerCase();
      const fmtp = codec.sdpFmtpLine || "";
      if (wanted === "h264" && mime === "video/h264" && H264_CONSTRAINED_BASELINE.test(fmtp)) {
        return /packetization-mode=1/.test(fmtp) ? 0 : 1; // aiortc sends mode 1 only
      }
      if (wanted === "vp8" && mime === "video/vp8") return 0;
      return 2;
    };
    const ordered = codecs.map((codec, index) => ({ codec, index }))
      .sort((a, b) => rank(a.codec) - rank(b.codec) || a.index - b.index)
      .map((entry) => entry.codec);
    try {
      transceiver.setCodecPreferences(ordered);
    } catch (error) {
      // An engine that refuses the list keeps its own order: the server takes what is offered.
    }
  }

  async function sendCandidate(init, gen) {
    if (gen !== generation) return;
    try {
      await fetch(`${api}/ice`, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authorization },
        body: JSON.stringify(init),
      });
    } catch (error) {
      // A lost candidate only matters if all are lost: the connection state says so.
    }
  }

  async function connect(gen) {
    closePeer();
    framesShown = false;
    const peer = new RTCPeerConnection({ iceServers });
    pc = peer;
    const videoTransceiver = peer.addTransceiver("video", { direction: "recvonly" });
    peer.addTransceiver("audio", { direction: "recvonly" });
    preferCodec(videoTransceiver, wantedCodec());

    const events = peer.createDataChannel("events");
    events.onmessage = (event) => gen === generation && onServerEvent(JSON.parse(event.data));
    // The server closing its side (a restart, a replaced connection) closes the channel
    // at once; ICE would take seconds to notice.
    events.onclose = () => gen === generation && reconnect("events channel closed");

    const stream = new MediaStream();
    peer.ontrack = (event) => {
      stream.addTrack(event.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      startPlayback(gen);
    };

    // Candidates go after the answer, one at a time and in order: the end-of-candidates
    // marker must not overtake the last of them on another of the browser's connections.
    let answered = false;
    const early = [];
    let sending = Promise.resolve();
    const send = (init) => { sending = sending.then(() => sendCandidate(init, gen)); };
    peer.onicecandidate = (event) => {
      const init = event.candidate ? event.candidate.toJSON() : { candidate: "" };
      if (answered) send(init);
      else early.push(init);
    };
    peer.onconnectionstatechange = () => gen === generation && onConnectionState(peer.connectionState);

    await peer.setLocalDescription(await peer.createOffer());
    const response = await fetch(`${api}/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authorization },
      body: JSON.stringify({ sdp: peer.localDescription.sdp, type: "offer" }),
    });
    if (gen !== generation) return;
    if (response.status === 404) return end("session_not_found");
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const reason = body.detail || `offer refused (${response.status})`;
      throw response.status < 500 ? new FatalError(reason) : new Error(reason);
    }
    await peer.setRemoteDescription(await response.json());
    answered = true;
    early.forEach(send);
  }

  function onConnectionState(connectionState) {
    clearTimeout(disconnectTimer);
    if (connectionState === "connected") {
      attempt = 0;
      failingSince = null;
      if (framesShown) setState(speaking ? "live" : "ready");
    } else if (connectionState === "disconnected") {
      disconnectTimer = setTimeout(() => reconnect("disconnected"), DISCONNECTED_GRACE_MS);
    } else if (connectionState === "failed" || connectionState === "closed") {
      reconnect(`connection ${connectionState}`);
    }
  }

  async function reconnect(why) {
    if (state === "ended" || state === "error") return;
    const gen = ++generation;
    closePeer();
    clearTimeout(disconnectTimer);
    failingSince = failingSince || Date.now();
    if (Date.now() - failingSince > GIVE_UP_AFTER_MS) return fail(`gave up reconnecting (${why})`);
    leave("connecting", { reconnecting: true, reason: why });
    const delay = RECONNECT_DELAYS_MS[Math.min(attempt, RECONNECT_DELAYS_MS.length - 1)];
    attempt += 1;
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (gen !== generation) return;
    await open(gen);
  }

  // Look the session up and negotiate; a failure that retrying can mend is retried.
  async function open(gen) {
    try {
      const info = await lookUpSession();
      if (gen !== generation) return;
      if (!info) return end("session_not_found");
      iceServers = info.ice_servers;
      scheduleKeepalive(info);
      await connect(gen);
    } catch (error) {
      if (gen !== generation) return;
      const reason = String(error.message || error);
      if (error instanceof FatalError) fail(reason);
      else reconnect(reason);
    }
  }

  function onServerEvent(message) {
    switch (message.type) {
      case "speaking_started":
        setSpeaking(true, message.utterance_id);
        break;
      case "speaking_ended":
      case "utterance_interrupted":
      case "utterance_cancelled":
        setSpeaking(false, message.utterance_id);
        break;
      case "session_ended":
        end(message.reason || "session_ended");
        break;
      case "connection_replaced":
        // Another player of this session took over; reconnecting would take it back.
        end("replaced");
        break;
      default:
        break;
    }
  }

  // --- playback and the sound unlock ----------------------------------------------------

  function onFirstFrame(gen) {
    if (gen !== generation || framesShown) return;
    framesShown = true;
    if (pc && pc.connectionState === "connected") setState(speaking ? "live" : "ready");
  }

  function watchFrames(gen) {
    if (video.requestVideoFrameCallback) {
      video.requestVideoFrameCallback(() => onFirstFrame(gen));
    } else {
      video.addEventListener("playing", () => onFirstFrame(gen), { once: true });
    }
  }

  async function startPlayback(gen) {
    watchFrames(gen);
    if (audioEnabled) {
      video.muted = false;
      video.play().catch(() => {});
      return;
    }
    try {
      await video.play(); // muted: always allowed
    } catch (error) {
      // Retried by the tap below.
    }
    await tryEnableAudio(false);
  }

  // Browsers (iOS and Safari above all) refuse sound until the user taps the page:
  // try unmuted, and if refused keep the video running muted behind the overlay.
  // One automatic try at a time (the audio and the video track arrive together); a tap
  // tries at once, while its gesture counts.
  function tryEnableAudio(fromGesture) {
    if (fromGesture) return unmute(true);
    if (!unlocking) unlocking = unmute(false).finally(() => { unlocking = null; });
    return unlocking;
  }

  async function unmute(fromGesture) {
    if (audioEnabled) return;
    video.muted = false;
    let enabled = false;
    try {
      await video.play();
      enabled = !video.muted && !video.paused;
    } catch (error) {
      enabled = false;
    }
    if (!enabled) {
      video.muted = true;
      video.play().catch(() => {});
    }
    unlock.hidden = enabled || state === "ended" || state === "error";
    if (audioEnabled !== enabled) {
      audioEnabled = enabled;
      post({ type: "audio", enabled, from_gesture: fromGesture });
    }
  }

  unlock.addEventListener("click", () => tryEnableAudio(true));

  // --- ?debug=1 -----------------------------------------------------------------------

  function startDebug() {
    debugBox.hidden = false;
    let last = null;
    setInterval(async () => {
      if (!pc) {
        debugBox.textContent = `state    ${state}`;
        return;
      }
      const stats = await pc.getStats();
      const now = { video: null, audio: null, pair: null, codecs: {}, time: performance.now() };
      stats.forEach((report) => {
        if (report.type === "inbound-rtp") now[report.kind] = report;
        if (report.type === "codec") now.codecs[report.id] = report.mimeType;
        if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") now.pair = report;
      });
      const seconds = last ? (now.time - last.time) / 1000 : 0;
      const kbps = (kind) => {
        if (!seconds || !now[kind] || !last[kind]) return 0;
        return ((now[kind].bytesReceived - last[kind].bytesReceived) * 8) / seconds / 1000;
      };
      const lines = [`state    ${state}${speaking ? ` (utterance ${utteranceId})` : ""}`, `pc       ${pc.connectionState}`];
      if (now.video) {
        const v = now.video;
        lines.push(
          `video    ${now.codecs[v.codecId] || "?"} ${v.frameWidth || "?"}x${v.frameHeight || "?"} ${(v.framesPerSecond || 0).toFixed(1)} fps ${kbps("video").toFixed(0)} kbit/s`,
          `frames   decoded ${v.framesDecoded || 0} dropped ${v.framesDropped || 0}`,
          `jitter   video ${((v.jitter || 0) * 1000).toFixed(1)} ms`,
        );
      }
      if (now.audio) {
        const a = now.audio;
        lines.push(
          `audio    ${now.codecs[a.codecId] || "?"} ${kbps("audio").toFixed(0)} kbit/s level ${(a.audioLevel || 0).toFixed(3)}`,
          `jitter   audio ${((a.jitter || 0) * 1000).toFixed(1)} ms`,
        );
      }
      if (now.pair) lines.push(`rtt      ${((now.pair.currentRoundTripTime || 0) * 1000).toFixed(1)} ms`);
      lines.push(`a/v      video ${video.paused ? "paused" : "playing"}, sound ${audioEnabled ? "on" : "muted"}`);
      debugBox.textContent = lines.join("\n");
      last = now;
    }, DEBUG_INTERVAL_MS);
  }

  // --- start ---------------------------------------------------------------------------

  setState("connecting");
  if (params.get("debug") === "1") startDebug();
  // Leaving the page ends its connection; coming back to it from the history cache
  // negotiates a new one.
  window.addEventListener("pagehide", () => stop());
  window.addEventListener("pageshow", (event) => event.persisted && reconnect("page shown again"));
  if (!window.RTCPeerConnection) fail("this browser has no WebRTC");
  else open(++generation);
})();
