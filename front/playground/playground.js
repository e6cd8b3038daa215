// The playground: every call goes to the public job API (/jobs/...), as any client's would.
"use strict";

const KEY_STORAGE = "audio-studio-api-key";
const POLL_MS = 400;
const FINAL = new Set(["succeeded", "failed", "cancelled"]);

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function call(path, init = {}) {
  return fetch(path, { ...init, headers: headers(init.headers || {}) });
}

// ---- errors next to their fields ----------------------------------------------------

function clearErrors(form) {
  form.querySelectorAll(".error, .form-error").forEach((node) => (node.textContent = ""));
  form.querySelectorAll("[aria-invalid]").forEach((node) => node.removeAttribute("aria-invalid"));
}

function showError(form, body, fallback) {
  const details = (body && body.detail) || [];
  let placed = false;
  for (const detail of details) {
    const field = form.querySelector(`[data-field="${detail.loc[0]}"]`);
    if (field) {
      field.querySelector(".error").textContent = detail.msg;
      const control = field.querySelector("input, textarea, select");
      if (control) control.setAttribute("aria-invalid", "true");
      placed = true;
    }
  }
  if (!placed) form.querySelector(".form-error").textContent = (body && body.error) || fallback;
}

// ---- request bodies -------------------------------------------------------------------

function jsonBody(form) {
  const body = {};
  for (const control of form.querySelectorAll("input[name], textarea[name], select[name]")) {
    if (control.value === "") continue;
    body[control.name] = control.dataset.kind === "number" ? Number(control.value) : control.value;
  }
  return JSON.stringify(body);
}

function formBody(form) {
  const body = new FormData();
  for (const control of form.querySelectorAll("input[name], textarea[name], select[name]")) {
    if (control.disabled) continue; // another mode's field: the service refuses what a mode does not take
    if (control.type === "file") {
      const file = control.files[0] || control.recorded;
      if (file) body.append(control.name, file, file.name || "recording.wav");
    } else if (control.value !== "") {
      body.append(control.name, control.value);
    }
  }
  return body;
}

// ---- a job: submit, follow with a progress bar and a cancel button, fetch the result -------

function describe(status, elapsed) {
  const p = status.progress;
  const counted = p.total ? ` ${p.done}/${p.total} ${p.unit || ""}` : "";
  const place = status.state === "queued" && p.queue_position ? ` (position ${p.queue_position})` : "";
  return `${status.state}: ${p.phase}${counted}${place} · ${elapsed.toFixed(1)} s`;
}

async function runJob(form, panel) {
  const api = form.dataset.api;
  const init = form.hasAttribute("data-form")
    ? { method: "POST", body: formBody(form) }
    : { method: "POST", body: jsonBody(form), headers: { "Content-Type": "application/json" } };
  const submitted = await call(`/jobs/${api}`, init);
  const accepted = await submitted.json().catch(() => null);
  if (submitted.status !== 202) {
    showError(form, accepted, `the service answered ${submitted.status}`);
    return null;
  }
  const box = panel.querySelector(".job");
  box.hidden = false;
  box.innerHTML = "";
  const bar = Object.assign(document.createElement("progress"), { max: 1, value: 0 });
  bar.setAttribute("aria-label", "Progress");
  const text = Object.assign(document.createElement("span"), { role: "status" });
  const cancel = Object.assign(document.createElement("button"), { type: "button", textContent: "Cancel" });
  cancel.addEventListener("click", () => call(`/jobs/${accepted.id}/cancel`, { method: "POST" }));
  box.append(bar, text, cancel);
  const started = performance.now();
  const writing = panel.querySelector(".answer"); // a critique's text so far shows there while it is written
  if (writing) writing.textContent = "";
  let status = accepted;
  while (!FINAL.has(status.state)) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const response = await call(`/jobs/${accepted.id}`);
    if (!response.ok) break;
    status = await response.json();
    bar.value = status.progress.fraction;
    text.textContent = describe(status, (performance.now() - started) / 1000);
    if (writing && status.progress.text) {
      writing.classList.add("writing");
      writing.textContent = status.progress.text;
    }
  }
  cancel.remove();
  if (writing) {
    writing.classList.remove("writing");
    writing.textContent = "";
  }
  if (status.state !== "succeeded") {
    text.textContent = status.state === "cancelled" ? "Cancelled." : "";
    if (status.error) showError(form, status.error, "the job failed");
    return null;
  }
  text.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
  const result = await call(`/jobs/${accepted.id}/result`);
  return result.json();
}

function wavBlob(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: "audio/wav" });
}

// ---- the panels ---------------------------------------------------------------------------

function generated(panel, answer) {
  const list = panel.querySelector(".results");
  list.innerHTML = "";
  for (const waveform of answer.waveforms) {
    const url = URL.createObjectURL(wavBlob(waveform.audio_base64));
    const item = document.createElement("li");
    const score = waveform.clap_score == null ? "" : ` · CLAP score ${waveform.clap_score.toFixed(3)}`;
    const critic = waveform.critic_score == null ? "" : ` · critic ${waveform.critic_score}/10`;
    const label = Object.assign(document.createElement("span"), { textContent: `Seed ${waveform.seed}${score}${critic}` });
    if (waveform.critic_reason) label.title = waveform.critic_reason;
    item.append(label);
    const audio = Object.assign(document.createElement("audio"), { controls: true, src: url });
    audio.setAttribute("aria-label", `Waveform with seed ${waveform.seed}`);
    const download = Object.assign(document.createElement("a"), {
      href: url, download: `audio-${waveform.seed}.wav`, textContent: "Download",
    });
    const reuse = Object.assign(document.createElement("button"), { type: "button", textContent: "Use this seed" });
    reuse.addEventListener("click", () => {
      panel.querySelector('[name="seed"]').value = waveform.seed;
      panel.querySelector('[name="num_waveforms"]').value = 1;
      panel.querySelector('[name="seed"]').focus();
    });
    item.append(audio, download, " ", reuse);
    list.append(item);
  }
}

function transformed(panel, answer) {
  panel.querySelector(".after").src = URL.createObjectURL(wavBlob(answer.waveforms[0].audio_base64));
}

function edited(panel, answer) {
  panel.querySelector(".after").src = URL.createObjectURL(wavBlob(answer.waveforms[0].audio_base64));
  const span = answer.edited;
  panel.querySelector(".edited").textContent =
    `Regenerated ${span.start_s.toFixed(2)}-${span.end_s.toFixed(2)} s of ${span.duration.toFixed(2)} s.`;
}

function critiqued(panel, answer) {
  const clips = answer.audio_seconds.map((u) => `${u.field}: ${u.seconds.toFixed(1)} s${u.truncated ? " (cut)" : ""}`);
  const segments = answer.segments.map((s) => `${s.start_s.toFixed(0)}-${s.end_s.toFixed(0)} s`);
  const facts = [...clips, ...(segments.length ? [`heard in segments ${segments.join(", ")}`] : [])];
  const box = panel.querySelector(".answer");
  box.textContent = answer.structured ? "" : (answer.text || "(an empty answer)");
  if (answer.structured) box.append(structuredView(answer.structured));
  if (facts.length) box.append(Object.assign(document.createElement("p"), { textContent: facts.join(" · ") }));
}

function structuredView(critique) {
  const view = document.createElement("div");
  const add = (tag, text) => view.appendChild(Object.assign(document.createElement(tag), { textContent: text }));
  add("p", critique.summary);
  const table = view.appendChild(document.createElement("table"));
  table.innerHTML = "<caption>Scores</caption><tr><th scope=\"col\">Dimension</th><th scope=\"col\">Score</th><th scope=\"col\">Comment</th></tr>";
  for (const [dimension, a] of Object.entries(critique.assessments)) {
    const row = table.insertRow();
    [dimension.replace("_", " / "), `${a.score}/10`, a.comment].forEach((text) => (row.insertCell().textContent = text));
  }
  const list = (title, items) => {
    if (!items || !items.length) return;
    add("h3", title);
    const ul = view.appendChild(document.createElement("ul"));
    items.forEach((text) => (ul.appendChild(document.createElement("li")).textContent = text));
  };
  const span = (x) => `${x.start_s.toFixed(1)}-${x.end_s.toFixed(1)} s, ${x.dimension}`;
  list("Findings", critique.findings.map((f) => `${span(f)}: ${f.observation} Practise: ${f.practice}`));
  list("Against the reference", (critique.reference_differences || []).map((d) => `${span(d)}: ${d.difference}`));
  list("Practice plan", critique.practice_plan);
  return view;
}

const SHOW = { generate: generated, transform: transformed, edit: edited, critique: critiqued };

// ---- the edit panel: its mode's fields, and a range chosen on the clip's waveform ----------

function setUpEdit(panel) {
  const mode = panel.querySelector('[name="mode"]');
  const showMode = () => {
    for (const group of panel.querySelectorAll("[data-mode]")) {
      group.hidden = group.dataset.mode !== mode.value;
      group.querySelectorAll("input, select").forEach((control) => (control.disabled = group.hidden));
    }
  };
  mode.addEventListener("change", showMode);
  showMode();

  const canvas = panel.querySelector(".waveform");
  const start = panel.querySelector('[name="start_s"]');
  const end = panel.querySelector('[name="end_s"]');
  let peaks = null; // per canvas column: the clip's [min, max]
  let seconds = 0;
  const draw = () => {
    const context = canvas.getContext("2d");
    const { width, height } = canvas;
    context.clearRect(0, 0, width, height);
    const from = (Number(start.value) / seconds) * width;
    const to = (Number(end.value) / seconds) * width;
    if (mode.value === "inpaint" && to > from) {
      context.fillStyle = "rgba(59, 91, 219, 0.25)";
      context.fillRect(from, 0, to - from, height);
    }
    context.fillStyle = "#1b1b1b";
    peaks.forEach(([low, high], x) => context.fillRect(x, (1 - high) * height / 2, 1, Math.max(1, (high - low) * height / 2)));
  };
  const loaded = async (file) => {
    const decoded = await new AudioContext().decodeAudioData(await file.arrayBuffer()).catch(() => null);
    if (!decoded) return;
    const samples = decoded.getChannelData(0);
    const per = Math.max(1, Math.floor(samples.length / canvas.width));
    peaks = Array.from({ length: canvas.width }, (_, x) => {
      let [low, high] = [0, 0];
      for (const sample of samples.subarray(x * per, (x + 1) * per)) {
        low = Math.min(low, sample);
        high = Math.max(high, sample);
      }
      return [low, high];
    });
    seconds = decoded.duration;
    canvas.hidden = false;
    draw();
  };
  const input = panel.querySelector('input[name="audio"]');
  input.addEventListener("change", () => input.files[0] && loaded(input.files[0]));
  panel.querySelector(".before").addEventListener("loadeddata", () => input.recorded && loaded(input.recorded));
  [start, end, mode].forEach((control) => control.addEventListener("input", () => peaks && draw()));

  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    return Math.round(fraction * seconds * 100) / 100;
  };
  let anchor = null;
  canvas.addEventListener("pointerdown", (event) => {
    if (!peaks) return;
    mode.value = "inpaint";
    showMode();
    anchor = at(event);
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (anchor === null) return;
    const here = at(event);
    [start.value, end.value] = [Math.min(anchor, here), Math.max(anchor, here)];
    draw();
  });
  canvas.addEventListener("pointerup", () => (anchor = null));
}

// ---- recording: the browser records compressed audio, the service takes WAV ----------------

function encodeWav(buffer) {
  const samples = buffer.getChannelData(0);
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => [...s].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, buffer.sampleRate, true); view.setUint32(28, buffer.sampleRate * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true); text(36, "data");
  view.setUint32(40, samples.length * 2, true);
  samples.forEach((s, i) => view.setInt16(44 + i * 2, Math.max(-1, Math.min(1, s)) * 0x7fff, true));
  return new File([view], "recording.wav", { type: "audio/wav" });
}

function setUpRecording(panel) {
  const button = panel.querySelector(".record");
  const input = panel.querySelector('input[name="audio"]');
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    button.hidden = true;
    return;
  }
  let recorder = null;
  button.addEventListener("click", async () => {
    if (recorder) {
      recorder.stop();
      return;
    }
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true }).catch(() => null);
    if (!stream) return;
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => chunks.push(event.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((track) => track.stop());
      const decoded = await new AudioContext().decodeAudioData(await new Blob(chunks).arrayBuffer());
      input.value = "";
      input.recorded = encodeWav(decoded);
      panel.querySelector(".before").src = URL.createObjectURL(input.recorded);
      recorder = null;
      button.textContent = "Record with the microphone";
      button.setAttribute("aria-pressed", "false");
    };
    recorder.start();
    button.textContent = "Stop recording";
    button.setAttribute("aria-pressed", "true");
  });
  input.addEventListener("change", () => {
    input.recorded = null;
    if (input.files[0]) panel.querySelector(".before").src = URL.createObjectURL(input.files[0]);
  });
}

// ---- start --------------------------------------------------------------------------------

function setUpKey() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  state.textContent = sessionStorage.getItem(KEY_STORAGE) ? "A key is set for this tab." : "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value) sessionStorage.setItem(KEY_STORAGE, input.value);
    else sessionStorage.removeItem(KEY_STORAGE);
    input.value = "";
    state.textContent = sessionStorage.getItem(KEY_STORAGE) ? "A key is set for this tab." : "No key.";
  });
}

function setUpPanel(panel) {
  const form = panel.querySelector("form");
  const button = form.querySelector('button[type="submit"]');
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    button.disabled = true;
    try {
      const answer = await runJob(form, panel);
      if (answer) SHOW[panel.id](panel, answer);
    } catch (error) {
      form.querySelector(".form-error").textContent = `Could not reach the service (${error.message}).`;
    } finally {
      button.disabled = false;
    }
  });
}

setUpKey();
document.querySelectorAll("main section").forEach(setUpPanel);
setUpRecording(document.getElementById("transform"));
setUpRecording(document.getElementById("edit"));
setUpEdit(document.getElementById("edit"));
