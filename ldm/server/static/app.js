// The ldm-serve page: a client of the same /sdapi/v1 API that other tools use.
"use strict";

const $ = (id) => document.getElementById(id);
const call = (url, body) =>
  fetch(url, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }).then(async (answer) => {
    const data = await answer.json().catch(() => null);
    if (!answer.ok) throw new Error((data && data.detail) || answer.statusText);
    return data;
  });
const api = (path, body) => call("/sdapi/v1/" + path, body);

let samplerAliases = {}; // any of a sampler's spellings (ours included) -> A1111 name
let initImage = null; // data: URL of the img2img picture
let lastSeed = null;

function say(text, ok = false) {
  $("message").textContent = text;
  $("message").className = ok ? "ok" : "";
}

// ------------------------------------------------------------ lists from the server

async function loadLists() {
  const [samplers, models, options, latentModes, upscalers] = await Promise.all(
    [api("samplers"), api("sd-models"), api("options"), api("latent-upscale-modes"), api("upscalers")]);
  for (const u of [...latentModes, ...upscalers]) $("hr_upscaler").add(new Option(u.name, u.name));
  $("sampler_name").add(new Option("model's", "")); // left as is: not sent, the model's own applies
  for (const s of samplers) {
    $("sampler_name").add(new Option(s.name, s.name));
    for (const alias of [s.name, ...s.aliases]) samplerAliases[alias.toLowerCase()] = s.name;
  }
  for (const m of models) $("model").add(new Option(m.title, m.title));
  for (const title of ["None", ...models.map((m) => m.title)]) $("refiner_checkpoint").add(new Option(title, title));
  $("model").value = options.sd_model_checkpoint;
  await showModelDefaults();
}

// Sampler, steps, cfg and size start empty and are sent only when set: the model's own sampling
// defaults (an LCM model's 4 steps) apply otherwise. The placeholders say what they are.
async function showModelDefaults() {
  const d = await call("/ldm/v1/model-defaults");
  $("sampler_name").options[0].text = "model's (" + d.sampler_name + ")";
  $("steps").placeholder = d.steps;
  $("cfg_scale").placeholder = d.cfg_scale;
  $("width").placeholder = d.width;
  $("height").placeholder = d.height;
}

$("model").addEventListener("change", async () => {
  say("loading " + $("model").value + " …", true);
  try {
    await api("options", { sd_model_checkpoint: $("model").value });
    await showModelDefaults();
    say("model " + $("model").value + " loaded", true);
  } catch (error) {
    say(error.message);
  }
});

// ------------------------------------------------------------ picture and mask

const picture = $("picture"), mask = $("mask");
let painting = false;

function setInitImage(url) {
  initImage = url;
  $("editor").hidden = !url;
  $("hires").disabled = !!url; // the hires fix is text to image only, as in A1111
  if (!url) return;
  const image = new Image();
  image.onload = () => {
    for (const canvas of [picture, mask]) {
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
    }
    picture.getContext("2d").drawImage(image, 0, 0);
  };
  image.src = url;
}

function paintAt(event) {
  const box = mask.getBoundingClientRect();
  const x = (event.clientX - box.left) * (mask.width / box.width);
  const y = (event.clientY - box.top) * (mask.height / box.height);
  const context = mask.getContext("2d");
  context.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  context.fillStyle = "#ff2020";
  context.beginPath();
  context.arc(x, y, Number($("brush").value) / 2, 0, 2 * Math.PI);
  context.fill();
}

mask.addEventListener("pointerdown", (event) => { painting = true; mask.setPointerCapture(event.pointerId); paintAt(event); });
mask.addEventListener("pointermove", (event) => { if (painting) paintAt(event); });
mask.addEventListener("pointerup", () => { painting = false; });
$("clear-mask").addEventListener("click", () => mask.getContext("2d").clearRect(0, 0, mask.width, mask.height));

// The painted strokes as A1111 wants a mask: white repaints, black keeps; null when unpainted.
function maskDataUrl() {
  const painted = mask.getContext("2d").getImageData(0, 0, mask.width, mask.height).data;
  const out = document.createElement("canvas");
  out.width = mask.width;
  out.height = mask.height;
  const context = out.getContext("2d");
  const pixels = context.createImageData(out.width, out.height);
  let any = false;
  for (let i = 0; i < painted.length; i += 4) {
    const value = painted[i + 3] > 0 ? 255 : 0;
    any = any || value > 0;
    pixels.data.set([value, value, value, 255], i);
  }
  if (!any) return null;
  context.putImageData(pixels, 0, 0);
  return out.toDataURL("image/png");
}

const readFile = (file) => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(reader.error);
  reader.readAsDataURL(file);
});

$("init-file").addEventListener("change", async () => {
  const file = $("init-file").files[0];
  if (file) setInitImage(await readFile(file));
});
$("drop-init").addEventListener("click", () => { $("init-file").value = ""; setInitImage(null); });

// ------------------------------------------------------------ PNG parameters back into the form

async function readParameters(file) {
  try {
    const info = await api("png-info", { image: await readFile(file) });
    const p = info.parameters;
    if (!p || p.Prompt === undefined) throw new Error(file.name + " carries no generation parameters");
    $("prompt").value = p.Prompt;
    $("negative_prompt").value = p["Negative prompt"] || "";
    // A hires fix's "Denoising strength" is its second pass's, as in A1111.
    const hires = p["Hires upscale"] !== undefined || p["Hires resize"] !== undefined;
    const fields = { Steps: "steps", "CFG scale": "cfg_scale", Seed: "seed", "Mask blur": "mask_blur",
      "Denoising strength": hires ? "hr_denoising_strength" : "denoising_strength",
      "Hires upscale": "hr_scale", "Hires steps": "hr_second_pass_steps", "Hires upscaler": "hr_upscaler" };
    for (const [key, id] of Object.entries(fields)) if (p[key] !== undefined) $(id).value = p[key];
    $("enable_hr").checked = hires;
    if (hires) $("hr_second_pass_steps").value = p["Hires steps"] || 0;
    [$("hr_resize_x").value, $("hr_resize_y").value] = p["Hires resize"] ? p["Hires resize"].split("x") : [0, 0];
    if (p.Sampler && samplerAliases[p.Sampler.toLowerCase()]) $("sampler_name").value = samplerAliases[p.Sampler.toLowerCase()];
    if (p.Size) [$("width").value, $("height").value] = p.Size.split("x");
    say("parameters read from " + file.name, true);
  } catch (error) {
    say(error.message);
  }
}

$("png-file").addEventListener("change", () => { if ($("png-file").files[0]) readParameters($("png-file").files[0]); });
document.addEventListener("dragover", (event) => { event.preventDefault(); $("drop-hint").hidden = false; });
document.addEventListener("dragleave", () => { $("drop-hint").hidden = true; });
document.addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop-hint").hidden = true;
  const file = event.dataTransfer.files[0];
  if (file) readParameters(file);
});

// ------------------------------------------------------------ generating

function request() {
  const number = (id) => ($(id).value === "" ? undefined : Number($(id).value));
  const body = {
    prompt: $("prompt").value, negative_prompt: $("negative_prompt").value, sampler_name: $("sampler_name").value || undefined,
    steps: number("steps"), cfg_scale: number("cfg_scale"), seed: number("seed"),
    width: number("width"), height: number("height"), batch_size: number("batch_size"),
  };
  if ($("refiner_checkpoint").value !== "None") {
    Object.assign(body, { refiner_checkpoint: $("refiner_checkpoint").value, refiner_switch_at: number("refiner_switch_at") });
  }
  if (!initImage) {
    if ($("enable_hr").checked) {
      Object.assign(body, {
        enable_hr: true, hr_upscaler: $("hr_upscaler").value, hr_second_pass_steps: number("hr_second_pass_steps"),
        denoising_strength: number("hr_denoising_strength"), hr_scale: number("hr_scale"),
        hr_resize_x: number("hr_resize_x"), hr_resize_y: number("hr_resize_y"),
      });
    }
    return ["txt2img", body];
  }
  Object.assign(body, { init_images: [initImage], denoising_strength: number("denoising_strength") });
  const painted = maskDataUrl();
  if (painted) Object.assign(body, { mask: painted, mask_blur: number("mask_blur") });
  return ["img2img", body];
}

async function watchProgress(isDone) {
  while (!isDone()) {
    try {
      const p = await api("progress");
      $("progress").value = p.progress;
      if (p.current_image) {
        $("preview").src = "data:image/png;base64," + p.current_image;
        $("preview").hidden = false;
      }
    } catch (error) { /* the job's own answer reports errors */ }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function addToGallery(image, infotext, seed) {
  const url = "data:image/png;base64," + image;
  const figure = document.createElement("figure");
  figure.innerHTML = '<img alt="result"><figcaption></figcaption><div class="actions">' +
    '<a download>download PNG</a><button type="button">use as picture</button></div>';
  figure.querySelector("img").src = url;
  figure.querySelector("figcaption").textContent = infotext;
  figure.querySelector("a").href = url;
  figure.querySelector("a").download = seed + ".png";
  figure.querySelector("button").addEventListener("click", () => setInitImage(url));
  $("gallery").prepend(figure);
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const [path, body] = request();
  let done = false;
  $("generate").disabled = true;
  $("interrupt").disabled = false;
  $("progress").hidden = false;
  $("progress").value = 0;
  say(path === "img2img" && body.mask ? "inpainting …" : "generating …", true);
  const watching = watchProgress(() => done);
  try {
    const answer = await api(path, body);
    const info = JSON.parse(answer.info);
    answer.images.forEach((image, k) => addToGallery(image, info.infotexts[k], info.all_seeds[k]));
    lastSeed = info.all_seeds.length ? info.all_seeds[0] : lastSeed;
    const notes = info.notes.length ? " (" + info.notes.join("; ") + ")" : "";
    say((info.interrupted ? "interrupted: " : "") + answer.images.length + " image(s), seed " + info.seed + notes, true);
  } catch (error) {
    say(error.message);
  } finally {
    done = true;
    await watching;
    $("generate").disabled = false;
    $("interrupt").disabled = true;
    $("progress").hidden = true;
    $("preview").hidden = true;
  }
});

$("interrupt").addEventListener("click", () => api("interrupt", {}));
$("reuse-seed").addEventListener("click", () => { if (lastSeed !== null) $("seed").value = lastSeed; });
$("random-seed").addEventListener("click", () => { $("seed").value = -1; });

loadLists().catch((error) => say("cannot reach the server: " + error.message));
