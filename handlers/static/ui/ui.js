// The pages' behaviour: every action is a call to the JSON API of the same server.
"use strict";

async function api(method, path, body) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { data = null; }
  if (!response.ok) {
    const error = new Error((data && data.error) || `${method} ${path}: HTTP ${response.status}`);
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw error;
  }
  return data;
}

// A worker turns one zip or folder into its CSV at a time and answers another with 503 and
// Retry-After: wait as told, and send the same request again.
async function busyRetried(call) {
  for (let tries = 1; ; tries++) {
    try {
      return await call();
    } catch (e) {
      if (e.status !== 503 || !e.retryAfter || tries >= 30) throw e;
      show("train-status", `the server is unpacking another upload; trying again in ${e.retryAfter} s`);
      await new Promise((resolve) => setTimeout(resolve, e.retryAfter * 1000));
    }
  }
}

function show(id, text) {
  const el = document.getElementById(id);
  if (!el) return;
  el.textContent = text;
  el.hidden = !text;
  // An error is said where the eye is: a long form's button can sit at the bottom of the screen.
  if (text && el.classList.contains("error")) el.scrollIntoView({ block: "center", behavior: "smooth" });
}

function seconds(s) {
  if (s === null || s === undefined) return "";
  return s < 90 ? `about ${Math.round(s)} s left` : `about ${Math.round(s / 60)} min left`;
}

// -- one model: live progress, cancel, verify, delete ---------------------------------
function modelPage() {
  const job = document.getElementById("job");
  if (!job) return;
  const sha1 = job.dataset.sha1;
  if (["new", "in_progress", "stalled"].includes(job.dataset.state)) {
    const timer = setInterval(async () => {
      let model;
      try { model = await api("GET", `/models/${sha1}`); } catch (e) { return; }
      const status = model.status;
      const progress = model.job && model.job.progress;
      show("state", status.replace("_", " "));
      if (progress) {
        show("stage", progress.stage);
        show("counts", `${progress.done}/${progress.total}`);
        show("eta", seconds(progress.eta_s));
        const bar = document.getElementById("bar");
        bar.max = progress.total || 1;
        bar.value = progress.done;
      }
      if (!["new", "in_progress", "stalled"].includes(status)) {
        clearInterval(timer);
        window.location.reload();
      }
    }, 1000);
  }
  const cancel = document.getElementById("cancel");
  if (cancel) cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { await api("POST", `/models/${sha1}/cancel`); show("stage", "cancelling"); }
    catch (e) { show("message", e.message); cancel.disabled = false; }
  });
  const verify = document.getElementById("verify");
  if (verify) verify.addEventListener("click", async () => {
    verify.disabled = true;
    show("verify-result", "Rebuilding in a fresh process…");
    try {
      const report = await api("POST", `/models/${sha1}/verify`);
      const result = document.getElementById("verify-result");
      result.textContent = report.identical
        ? "IDENTICAL: rebuilt in a fresh process from its stored inputs, the model has the same bytes."
        : `DIFFERENT: ${report.message || "the rebuilt model's bytes differ"}.`;
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "the report";
      const pre = document.createElement("pre");
      pre.textContent = JSON.stringify(report, null, 2);
      details.append(summary, pre);
      result.append(details);
      result.hidden = false;
    } catch (e) { show("verify-result", "verify failed: " + e.message); }
    verify.disabled = false;
  });
  const del = document.getElementById("delete");
  if (del) del.addEventListener("click", async () => {
    if (!window.confirm("Forget this model? Its objects stay until the store is garbage-collected.")) return;
    try { await api("DELETE", `/models/${sha1}`); window.location.href = "/"; }
    catch (e) { show(document.getElementById("verify-result") ? "verify-result" : "retry-result", e.message); }
  });
  const retry = document.getElementById("retry");
  if (retry) retry.addEventListener("click", async () => {
    retry.disabled = true;
    try { await busyRetried(() => api("POST", `/models/${sha1}/retry`)); window.location.reload(); }
    catch (e) { show("retry-result", e.message); retry.disabled = false; }
  });
}

// -- label an image ------------------------------------------------------------------
function labelPage() {
  const form = document.getElementById("label-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    show("label-error", "");
    const model = document.getElementById("model").value;
    const file = document.getElementById("image-file").files[0];
    const url = document.getElementById("image-url").value.trim();
    let probabilities;
    try {
      if (file) {
        const data = new FormData();
        data.append("model_sha1", model);
        data.append("image", file);
        probabilities = await api("POST", "/infer", data);
      } else if (url) {
        probabilities = await api("POST", "/infer", { model: { sha1: model }, image: { url } });
      } else {
        throw new Error("choose an image file or give its URL");
      }
    } catch (e) { show("label-error", e.message); return; }
    const ranked = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
    show("top-label", ranked[0][0]);
    const bars = document.getElementById("bars");
    bars.replaceChildren(...ranked.map(([label, p]) => {
      const row = document.createElement("div");
      row.className = "bar-row";
      row.dataset.label = label;
      const name = document.createElement("span");
      name.className = "bar-label";
      name.textContent = label;
      const track = document.createElement("span");
      track.className = "bar-track";
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.width = `${(100 * p).toFixed(1)}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "bar-value";
      value.textContent = `${(100 * p).toFixed(1)}%`;
      row.append(name, track, value);
      return row;
    }));
    document.getElementById("result").hidden = false;
  });
}

// -- train ---------------------------------------------------------------------------
async function upload(file) {
  const data = new FormData();
  data.append("file", file);
  return (await api("POST", "/objects", data)).sha1;
}

function trainPage() {
  const form = document.getElementById("train-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    show("train-error", "");
    const button = document.getElementById("train-button");
    button.disabled = true;
    try {
      const csvUrl = document.getElementById("csv-url").value.trim();
      const csvFile = document.getElementById("csv-file").files[0];
      const images = Array.from(document.getElementById("image-files").files);
      const folder = Array.from(document.getElementById("photo-folder").files);
      const zipFile = document.getElementById("photo-zip").files[0];
      let data;
      if (folder.length) {
        // Paths as under the chosen folder ("dots/1.jpg"): the server lists them as `stl train` would.
        const files = [];
        for (let i = 0; i < folder.length; i++) {
          show("train-status", `uploading file ${i + 1} of ${folder.length}`);
          const path = folder[i].webkitRelativePath.split("/").slice(1).join("/");
          files.push({ path, sha1: await upload(folder[i]) });
        }
        data = { folder: { files } };
      } else if (zipFile) {
        show("train-status", "uploading the zip");
        data = { zip: { sha1: await upload(zipFile) } };
      } else if (csvFile) {
        for (let i = 0; i < images.length; i++) {
          show("train-status", `uploading image ${i + 1} of ${images.length}`);
          await upload(images[i]);
        }
        show("train-status", "uploading the CSV");
        data = { csv: { sha1: await upload(csvFile) } };
      } else if (csvUrl) {
        data = { csv: { url: csvUrl } };
      } else {
        throw new Error("choose a photo folder or a zip, or give a CSV URL, or upload a CSV and its images");
      }
      const views = Array.from(form.querySelectorAll("input[name=views]:checked")).map((v) => v.value);
      const metadata = {
        base: document.getElementById("base").value,
        views,
        head: document.getElementById("head").value,
        calibrate: document.getElementById("calibrate").checked,
        random_seed: Number(document.getElementById("seed").value),
        train_percentage: Number(document.getElementById("train-percentage").value),
      };
      const size = Number(document.getElementById("image-size").value);
      if (size > 0) metadata.image_size = size;
      show("train-status", "submitting");
      const job = await busyRetried(() => api("POST", "/train", { ...data, metadata, model: { uri: "" } }));
      window.location.href = `/ui/models/${job.model_sha1}`;
    } catch (e) {
      show("train-status", "");
      show("train-error", e.message);
      button.disabled = false;
    }
  });
}

modelPage();
labelPage();
trainPage();
