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

function showError(box, message) {
  box.textContent = message;
  box.hidden = !message;
}

// Run a panel's task with its buttons disabled; an error shows inside the panel (beside the controls
// that caused it), its status says the request failed, and the panel stays usable.
async function runInPanel(panel, task) {
  const buttons = panel.querySelectorAll("button");
  const errorBox = panel.querySelector(".error");
  showError(errorBox, "");
  buttons.forEach((button) => { button.disabled = true; });
  try {
    await task();
  } catch (error) {
    showError(errorBox, error.message);
    panel.querySelector(".status").textContent = "Not done: see the message above; change the setting and retry.";
  } finally {
    buttons.forEach((button) => { button.disabled = false; });
  }
}

function newSeed(id) {
  byId(id).value = String(Math.floor(Math.random() * 1e9));
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

// The model's classes by name ("0"-"9" for digits, its own names for a model of other images); the
// value sent to the server is the class's index.
let classNames = [];

function fillClassChoices(select, firstOption) {
  if (firstOption) select.add(new Option(firstOption, ""));
  classNames.forEach((name, index) => select.add(new Option(name, String(index))));
}

function className(index) {
  return classNames[index] ?? String(index);
}

// -- generate ---------------------------------------------------------------------------------

async function generateDigit() {
  const digit = byId("digit").value;
  const request = {digit: digit === "" ? null : Number(digit), guidance: numberFrom("guidance"),
                   sampler: byId("sampler").value, steps: numberFrom("steps"), seed: numberFrom("seed")};
  byId("filmstrip").replaceChildren();
  const status = byId("generate-status");
  status.textContent = "starting...";
  const shownFrom = performance.now();
  await postStream("/api/generate", request, (item) => {
    drawPixels(byId("generate-canvas"), item.pixels);
    if (item.type === "frame") {
      addToFilmstrip(item.pixels, `step ${item.step}, t=${item.t}`);
      status.textContent = `step ${item.step} of ${item.steps} (t = ${item.t})`;
    } else {
      status.textContent = `done: seed ${request.seed}, guidance ${request.guidance}, ` +
        `${item.passes_per_digit} network passes; computed in ${item.seconds.toFixed(2)} s, shown step by ` +
        `step over ${((performance.now() - shownFrom) / 1000).toFixed(1)} s`;
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

function padCell(event) {
  const box = byId("pad").getBoundingClientRect();
  return [Math.floor(((event.clientY - box.top) / box.height) * SIZE),
          Math.floor(((event.clientX - box.left) / box.width) * SIZE)];
}

function inkCell(row, column, erasing) {
  const reach = erasing ? 1 : 0; // the eraser clears 3x3, the brush inks 2x2
  for (let r = row - reach; r <= row + 1; r++) {
    for (let c = column - reach; c <= column + 1; c++) {
      if (r >= 0 && r < SIZE && c >= 0 && c < SIZE) padPixels[r * SIZE + c] = erasing ? 0 : 255;
    }
  }
}

// Ink every cell on the line from one pointer position to the next (Bresenham), so a fast stroke
// whose events arrive far apart is still one continuous line; a tap inks a dot.
function inkLine([fromRow, fromColumn], [toRow, toColumn], erasing) {
  const rowSteps = Math.abs(toRow - fromRow), columnSteps = Math.abs(toColumn - fromColumn);
  const count = Math.max(rowSteps, columnSteps);
  for (let i = 0; i <= count; i++) {
    const share = count === 0 ? 0 : i / count;
    inkCell(Math.round(fromRow + share * (toRow - fromRow)), Math.round(fromColumn + share * (toColumn - fromColumn)),
            erasing);
  }
}

function listenToPad() {
  const pad = byId("pad");
  let last = null; // the cell of the previous pointer event of the stroke in progress
  const paint = (event) => {
    const cell = padCell(event);
    inkLine(last || cell, cell, document.querySelector("input[name=tool]:checked").value === "eraser");
    last = cell;
    renderPad();
  };
  pad.addEventListener("pointerdown", (event) => {
    pad.setPointerCapture(event.pointerId);
    last = null;
    paint(event);
  });
  pad.addEventListener("pointermove", (event) => {
    if (pad.hasPointerCapture(event.pointerId)) paint(event);
  });
  const end = () => { last = null; };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);
}

function clearPad() {
  padPixels.fill(0);
  renderPad();
  drawPixels(byId("complete-canvas"), new Uint8ClampedArray(SIZE * SIZE));
  byId("complete-status").textContent = "Cleared. Draw part of a digit outside the shaded area, then Complete.";
}

// The drawing as a 28x28 greyscale PNG (white ink on black, as MNIST), which
// `mnist-diffusion complete --images drawing.png` accepts.
function saveDrawing() {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = SIZE;
  drawPixels(canvas, padPixels);
  const link = document.createElement("a");
  link.download = "drawing.png";
  link.href = canvas.toDataURL("image/png");
  link.click();
  byId("complete-status").textContent = "Saved drawing.png: try mnist-diffusion complete --images drawing.png " +
    `--mask ${byId("region").value}`;
}

async function loadTestDigit() {
  const digit = await getJson(`/api/test-digit?seed=${Math.floor(Math.random() * 1e9)}`);
  byId("region").value = "lower";
  // Only the kept half reaches the pad: the erased half is what the model has to draw, unseen.
  padPixels.set(digit.pixels.map((value, index) => (regionErased(Math.floor(index / SIZE), index % SIZE) ? 0 : value)));
  renderPad();
  byId("complete-status").textContent = `${digit.source}${digit.label === null ? "" : `, a ${digit.label}`}; ` +
    "its lower half is erased. Complete it.";
}

async function completeDrawing() {
  const digit = byId("complete-digit").value;
  const request = {pixels: Array.from(padPixels), known: knownMask(), digit: digit === "" ? null : Number(digit),
                   seed: numberFrom("complete-seed")};
  const status = byId("complete-status");
  status.textContent = "completing...";
  await postStream("/api/complete", request, (item) => {
    drawPixels(byId("complete-canvas"), item.pixels);
    status.textContent = item.type === "frame" ? `step ${item.step} of ${item.steps}`
      : `done: seed ${request.seed}, as ${item.digit === null ? "whatever it becomes" : `a ${className(item.digit)}`}` +
        `${item.guessed ? " (the digit your strokes most likely begin, as the model judges them)" : ""}; ` +
        `computed in ${item.seconds.toFixed(2)} s (${item.method})`;
  });
}

// -- interpolation ----------------------------------------------------------------------------

async function interpolate() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  const request = mode === "seeds"
    ? {mode, digit: byId("interpolate-digit").value === "" ? null : Number(byId("interpolate-digit").value),
       seeds: [numberFrom("seed-a"), numberFrom("seed-b")], guidance: numberFrom("interpolate-guidance")}
    : {mode, digits: [Number(byId("digit-a").value), Number(byId("digit-b").value)],
       seed: numberFrom("interpolate-seed"), guidance: numberFrom("interpolate-guidance")};
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
  classNames = info.class_names;
  fillClassChoices(byId("digit"), conditional ? null : "any");
  fillClassChoices(byId("complete-digit"), null);
  fillClassChoices(byId("interpolate-digit"), conditional ? null : "any");
  fillClassChoices(byId("digit-a"), null);
  fillClassChoices(byId("digit-b"), null);
  if (conditional) byId("digit-b").value = String(Math.min(8, info.num_classes - 1));
  info.samplers.forEach((name) => byId("sampler").add(new Option(name, name, false, name === info.defaults.sampler)));
  for (const id of ["guidance", "interpolate-guidance"]) {
    byId(id).value = info.defaults.guidance;
    byId(id).max = info.limits.guidance;
  }
  byId("steps").value = info.defaults.steps;
  byId("steps").max = info.limits.steps;
  for (const id of ["seed", "complete-seed", "seed-a", "seed-b", "interpolate-seed"]) byId(id).max = info.limits.seed;
  const panel = (id) => byId(id);
  const on = (id, handler) => byId(id).addEventListener("click", handler);
  on("generate", () => runInPanel(panel("generate-panel"), generateDigit));
  on("generate-again", () => { newSeed("seed"); runInPanel(panel("generate-panel"), generateDigit); });
  on("complete", () => runInPanel(panel("complete-panel"), completeDrawing));
  on("complete-again", () => { newSeed("complete-seed"); runInPanel(panel("complete-panel"), completeDrawing); });
  on("test-digit", () => runInPanel(panel("complete-panel"), loadTestDigit));
  on("interpolate", () => runInPanel(panel("interpolate-panel"), interpolate));
  on("clear", clearPad);
  on("save-drawing", saveDrawing);
  byId("region").addEventListener("change", renderPad);
  byId("slider").addEventListener("input", showInterpolationFrame);
  listenToPad();
  renderPad();
  document.body.dataset.ready = "true";
}

start().catch((error) => showError(byId("error"), error.message));
