// The page of `mnist-diffusion serve`. Every request goes to this page's own server; results
// stream back as JSON lines (one per sampler step) and are drawn as they arrive.
"use strict";

const SIZE = 28;
const byId = (id) => document.getElementById(id);
const padPixels = new Uint8ClampedArray(SIZE * SIZE); // the drawing pad's ink, 0-255, row by row
let interpolationFrames = [];

// -- talking to the server --------------------------------------------------------------------

async function postStream(path, body, onItem) {
  const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  if (!response.ok) {
    const refusal = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
    throw new Error(refusal.error);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    pending += decoder.decode(value, {stream: true});
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines.filter((text) => text.trim())) {
      const item = JSON.parse(line);
      if (item.type === "error") throw new Error(item.error);
      onItem(item);
    }
  }
}

async function getJson(path) {
  const response = await fetch(path);
  const payload = await response.json();
  if (!response.ok) throw new Error(payload.error);
  return payload;
}

function showError(message) {
  const box = byId("error");
  box.textContent = message;
  box.hidden = !message;
}

async function runExclusive(button, task) {
  showError("");
  button.disabled = true;
  try {
    await task();
  } catch (error) {
    showError(error.message);
  } finally {
    button.disabled = false;
  }
}

// -- drawing ----------------------------------------------------------------------------------

function drawPixels(canvas, pixels) {
  const image = canvas.getContext("2d").createImageData(SIZE, SIZE);
  pixels.forEach((value, index) => {
    image.data.set([value, value, value, 255], 4 * index);
  });
  canvas.getContext("2d").putImageData(image, 0, 0);
}

function addToFilmstrip(pixels, title) {
  const thumb = document.createElement("canvas");
  thumb.width = thumb.height = SIZE;
  thumb.className = "digit";
  thumb.title = title;
  drawPixels(thumb, pixels);
  byId("filmstrip").appendChild(thumb);
}

function numberFrom(id) {
  const text = byId(id).value.trim();
  return text === "" || Number.isNaN(Number(text)) ? text : Number(text);
}

function fillDigitChoices(select, count, firstOption) {
  if (firstOption) select.add(new Option(firstOption, ""));
  for (let digit = 0; digit < count; digit++) select.add(new Option(String(digit), String(digit)));
}

// -- generate ---------------------------------------------------------------------------------

async function generateDigit() {
  const digit = byId("digit").value;
  const request = {digit: digit === "" ? null : Number(digit), guidance: numberFrom("guidance"),
                   sampler: byId("sampler").value, steps: numberFrom("steps"), seed: numberFrom("seed")};
  byId("filmstrip").replaceChildren();
  const status = byId("generate-status");
  status.textContent = "starting...";
  await postStream("/api/generate", request, (item) => {
    drawPixels(byId("generate-canvas"), item.pixels);
    if (item.type === "frame") {
      addToFilmstrip(item.pixels, `step ${item.step}, t=${item.t}`);
      status.textContent = `step ${item.step} of ${item.steps} (t = ${item.t}), ${item.ms} ms`;
    } else {
      status.textContent = `done: ${item.seconds.toFixed(2)} s, ${item.passes_per_digit} network passes`;
    }
  });
}

// -- the drawing pad and completion ------------------------------------------------------------

function regionErased(row, column) {
  const half = SIZE / 2;
  switch (byId("region").value) {
    case "lower": return row >= half;
    case "upper": return row < half;
    case "left": return column < half;
    case "right": return column >= half;
    default: return row >= 8 && row < 20 && column >= 8 && column < 20; // the centre 12x12
  }
}

function knownMask() {
  return Array.from(padPixels, (_, index) => (regionErased(Math.floor(index / SIZE), index % SIZE) ? 0 : 1));
}

function renderPad() {
  const image = byId("pad").getContext("2d").createImageData(SIZE, SIZE);
  padPixels.forEach((value, index) => {
    const shaded = regionErased(Math.floor(index / SIZE), index % SIZE);
    image.data.set(shaded ? [value * 0.5, value * 0.5 + 40, value * 0.5 + 90, 255] : [value, value, value, 255],
                   4 * index);
  });
  byId("pad").getContext("2d").putImageData(image, 0, 0);
}

function paintAt(event) {
  const box = byId("pad").getBoundingClientRect();
  const column = Math.floor(((event.clientX - box.left) / box.width) * SIZE);
  const row = Math.floor(((event.clientY - box.top) / box.height) * SIZE);
  const erasing = document.querySelector("input[name=tool]:checked").value === "eraser";
  const reach = erasing ? 1 : 0; // the eraser clears 3x3, the brush inks 2x2
  for (let r = row - reach; r <= row + 1; r++) {
    for (let c = column - reach; c <= column + 1; c++) {
      if (r >= 0 && r < SIZE && c >= 0 && c < SIZE) padPixels[r * SIZE + c] = erasing ? 0 : 255;
    }
  }
  renderPad();
}

function listenToPad() {
  const pad = byId("pad");
  pad.addEventListener("pointerdown", (event) => {
    pad.setPointerCapture(event.pointerId);
    paintAt(event);
  });
  pad.addEventListener("pointermove", (event) => {
    if (pad.hasPointerCapture(event.pointerId)) paintAt(event);
  });
}

async function loadTestDigit() {
  const digit = await getJson(`/api/test-digit?seed=${Math.floor(Math.random() * 1e9)}`);
  padPixels.set(digit.pixels);
  byId("region").value = "lower";
  renderPad();
  byId("complete-status").textContent = `${digit.source}${digit.label === null ? "" : `, a ${digit.label}`}; ` +
    "its lower half is erased. Complete it.";
}

async function completeDrawing() {
  const digit = byId("complete-digit").value;
  const request = {pixels: Array.from(padPixels), known: knownMask(), digit: digit === "" ? null : Number(digit),
                   seed: numberFrom("seed")};
  const status = byId("complete-status");
  status.textContent = "completing...";
  await postStream("/api/complete", request, (item) => {
    drawPixels(byId("complete-canvas"), item.pixels);
    status.textContent = item.type === "frame" ? `step ${item.step} of ${item.steps}, ${item.ms} ms`
      : `done: ${item.seconds.toFixed(2)} s (${item.method})`;
  });
}

// -- interpolation ----------------------------------------------------------------------------

async function interpolate() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  const request = mode === "seeds"
    ? {mode, digit: byId("interpolate-digit").value === "" ? null : Number(byId("interpolate-digit").value),
       seeds: [numberFrom("seed-a"), numberFrom("seed-b")], guidance: numberFrom("guidance")}
    : {mode, digits: [Number(byId("digit-a").value), Number(byId("digit-b").value)], seed: numberFrom("seed"),
       guidance: numberFrom("guidance")};
  interpolationFrames = [];
  const slider = byId("slider");
  await postStream("/api/interpolate", request, (item) => {
    if (item.type !== "frame") return;
    interpolationFrames.push(item.pixels);
    slider.max = String(interpolationFrames.length - 1);
    slider.value = slider.max;
    slider.disabled = false;
    showInterpolationFrame();
  });
}

function showInterpolationFrame() {
  const index = Number(byId("slider").value);
  if (!interpolationFrames[index]) return;
  drawPixels(byId("interpolate-canvas"), interpolationFrames[index]);
  byId("interpolate-status").textContent = `frame ${index + 1} of ${interpolationFrames.length}`;
}

// -- start ------------------------------------------------------------------------------------

async function start() {
  const info = await getJson("/api/info");
  const conditional = info.num_classes > 0;
  fillDigitChoices(byId("digit"), info.num_classes, conditional ? null : "any");
  fillDigitChoices(byId("complete-digit"), info.num_classes, null);
  fillDigitChoices(byId("interpolate-digit"), info.num_classes, conditional ? null : "any");
  fillDigitChoices(byId("digit-a"), info.num_classes, null);
  fillDigitChoices(byId("digit-b"), info.num_classes, null);
  if (conditional) byId("digit-b").value = String(Math.min(8, info.num_classes - 1));
  info.samplers.forEach((name) => byId("sampler").add(new Option(name, name, false, name === info.defaults.sampler)));
  byId("guidance").value = info.defaults.guidance;
  byId("steps").value = info.defaults.steps;
  byId("generate").addEventListener("click", () => runExclusive(byId("generate"), generateDigit));
  byId("complete").addEventListener("click", () => runExclusive(byId("complete"), completeDrawing));
  byId("test-digit").addEventListener("click", () => runExclusive(byId("test-digit"), loadTestDigit));
  byId("interpolate").addEventListener("click", () => runExclusive(byId("interpolate"), interpolate));
  byId("clear").addEventListener("click", () => { padPixels.fill(0); renderPad(); });
  byId("region").addEventListener("change", renderPad);
  byId("slider").addEventListener("input", showInterpolationFrame);
  listenToPad();
  renderPad();
  document.body.dataset.ready = "true";
}

start().catch((error) => showError(error.message));
