// lostface live page: camera -> POST /offer -> restored video back, controls over a data channel.
"use strict";
const ICE_SERVERS = /*ICE_SERVERS*/[];
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token") || "";
let pc = null, channel = null, timer = null, last = null, serverStats = null;
window.lostfaceStats = { fps: 0, framesDecoded: 0, latencyMs: null, state: "idle", capture: null };

function status(text) { $("status").textContent = text; }

function addReference(name) {
  if ([...$("reference").options].some((o) => o.value === name)) return;
  const o = document.createElement("option");
  o.value = o.textContent = name;
  $("reference").appendChild(o);
}

// the last capture as the server reports it: what it is doing, what it learned, where it
// saved the photos and how to give them to a later run
function showCapture(c) {
  if (!c) return;
  window.lostfaceStats.capture = c;
  const box = $("capture-state");
  box.className = c.state || "";
  box.textContent = c.text ? "capture: " + c.text : "";
  if (c.saved) {
    box.appendChild(document.createElement("br"));
    const parts = ["saved in ", c.saved, "; give ", c.use,
      " to a later run (lostface run, serve, vcam) to use them"];
    parts.forEach((text, i) => {
      const node = document.createElement(i % 2 ? "code" : "span");
      node.textContent = text;
      box.appendChild(node);
    });
  }
  $("capture").disabled = !channel || c.state === "capturing" || c.state === "building";
}

function send(msg) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify(msg));
}

async function start() {
  $("start").disabled = true;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: 640, height: 480, frameRate: 30 }, audio: false });
    $("local").srcObject = stream;
    pc = new RTCPeerConnection({ iceServers: ICE_SERVERS });
    stream.getVideoTracks().forEach((t) => pc.addTrack(t, stream));
    pc.ontrack = (e) => { $("remote").srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onconnectionstatechange = () => {
      window.lostfaceStats.state = pc.connectionState;
      if (pc.connectionState === "failed") status("The connection failed; press Start again.");
    };
    channel = pc.createDataChannel("control");
    channel.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "hello") {
        for (const name of m.references) addReference(name);
        $("capture").disabled = false;
      } else if (m.type === "stats") {
        serverStats = m;
      }
      for (const name of m.captured || []) addReference(name);
      showCapture(m.capture);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
      setTimeout(resolve, 3000);
    });
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const r = await fetch("offer", { method: "POST", headers,
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }) });
    const answer = await r.json();
    if (!r.ok) throw new Error(answer.error || r.statusText);
    await pc.setRemoteDescription(answer);
    $("stop").disabled = false;
    timer = setInterval(readout, 1000);
    status("");
  } catch (err) {
    status(String(err.message || err));
    stop();
  }
}

async function readout() {
  if (!pc) return;
  const stats = await pc.getStats();
  let decoded = null, rtt = null;
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded;
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined)
      rtt = s.currentRoundTripTime;
  });
  const now = performance.now();
  if (decoded !== null && last) {
    const fps = (decoded - last.decoded) * 1000 / (now - last.t);
    window.lostfaceStats.fps = fps;
    $("fps").textContent = fps.toFixed(1);
  }
  if (decoded !== null) { last = { decoded, t: now }; window.lostfaceStats.framesDecoded = decoded; }
  if (serverStats) {
    // end to end: the server's capture->send time plus the network round trip
    const lat = serverStats.latency_p50_ms + (rtt !== null ? rtt * 1000 : 0);
    window.lostfaceStats.latencyMs = lat;
    $("latency").textContent = lat.toFixed(0);
    $("server").textContent = serverStats.fps.toFixed(1) + " fps";
  }
}

function stop() {
  if (timer) clearInterval(timer);
  timer = null;
  if (pc) {
    pc.getSenders().forEach((s) => s.track && s.track.stop());
    pc.close();
  }
  pc = null; channel = null; last = null;
  $("capture").disabled = true;
  $("start").disabled = false;
  $("stop").disabled = true;
}

$("start").onclick = start;
$("stop").onclick = stop;
$("restore").onchange = (e) => send({ restore: e.target.checked });
$("overlay").onchange = (e) => send({ overlay: e.target.checked });
$("reference").onchange = (e) => send({ reference: e.target.value });
$("capture").onclick = () => {
  const name = $("capture-name").value.trim() || "me";
  send({ capture: name });
  $("capture").disabled = true;
  showCapture({ state: "capturing", text: "starting: take the mask off and look at the camera" });
};
if (new URLSearchParams(location.search).get("autostart") === "1") start();
