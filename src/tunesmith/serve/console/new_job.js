// The new fine-tune form: a base model, a method, the files, the main hyperparameters (empty means
// auto) and tunesmith's own settings as JSON; "Estimate" asks POST /v1/console/estimate (tunesmith
// train --estimate on this job), "Start" creates the job with POST /v1/fine_tuning/jobs.
import {api, element, fileLabel, listAll, number, option, ready, setStatus} from "./workbench.js";

const $ = (id) => document.getElementById(id);

function hyperparameters(type) {
  const values = {};
  for (const input of document.querySelectorAll(".hyperparameters input")) {
    const field = input.closest(".field");
    if (field.hidden || !input.value.trim()) continue;
    const text = input.value.trim();
    values[input.name] = text === "auto" ? "auto" : Number(text);
    if (Number.isNaN(values[input.name])) throw new Error(`${input.name}: give a number or auto, not ${text}`);
  }
  return values;
}

function jobBody() {
  const [type, method] = $("job-method").value.split(":");
  let settings;
  try {
    settings = JSON.parse($("job-settings").value.trim() || "{}");
  } catch (error) {
    throw new Error("tunesmith settings: not JSON (" + error.message + ")");
  }
  if (settings === null || typeof settings !== "object" || Array.isArray(settings)) {
    throw new Error("tunesmith settings: give a JSON object, e.g. {\"train\": {\"max_steps\": 100}}");
  }
  if (method) settings.method = method;
  const body = {model: $("job-model").value, training_file: $("job-training-file").value, method: {type}};
  const values = hyperparameters(type);
  if (Object.keys(values).length) body.method[type] = {hyperparameters: values};
  if ($("job-validation-file").value) body.validation_file = $("job-validation-file").value;
  if ($("job-suffix").value.trim()) body.suffix = $("job-suffix").value.trim();
  if (Object.keys(settings).length) body.tunesmith = settings;
  return body;
}

function showMethodFields() {
  const type = $("job-method").value.split(":")[0];
  for (const field of document.querySelectorAll("[data-method-only]")) field.hidden = field.dataset.methodOnly !== type;
}

async function loadFiles() {
  const files = await listAll("/v1/files?purpose=fine-tune");
  const wanted = $("job-form").dataset.trainingFile;
  $("job-training-file").replaceChildren(...files.map((f) => option(f.id, fileLabel(f), f.id === wanted)));
  $("job-validation-file").replaceChildren(option("", "none"), ...files.map((f) => option(f.id, fileLabel(f))));
  if (!files.length) setStatus($("job-form-status"), "No training file yet: upload one on the data page first.", true);
}

function showEstimate(estimate) {
  const box = $("estimate-result");
  const list = element("dl", "facts estimate");
  const rows = [
    ["steps", estimate.steps, "estimate-steps"],
    ["tokens", `${estimate.tokens.toLocaleString()} (${estimate.loss_tokens.toLocaleString()} in the loss)`, "estimate-tokens"],
    ["validation passes", estimate.evaluations, "estimate-evaluations"],
    ["wall time", `~${duration(estimate.wall_seconds)} (setup ${number(estimate.setup_seconds, 3)} s, steps ` +
                  `${number(estimate.train_seconds, 3)} s, validation ${number(estimate.eval_seconds, 3)} s, saving ` +
                  `${number(estimate.save_seconds, 3)} s)`, "estimate-wall"],
    ["peak memory", `~${Math.round(estimate.peak_memory_mb).toLocaleString()} MB`, "estimate-memory"],
    ["measured on", `this server (${estimate.device}); a worker on other hardware differs`, "estimate-device"],
  ];
  for (const [label, value, className] of rows) list.append(element("dt", null, label), element("dd", className, value));
  box.replaceChildren(element("h2", null, "Estimate"), list);
}

function duration(seconds) {
  return seconds < 120 ? `${Math.round(seconds)} s` : `${(seconds / 60).toFixed(1)} min`;
}

async function estimate() {
  const status = $("job-form-status");
  const button = $("job-estimate");
  button.disabled = true;
  setStatus(status, "estimating: the model is loaded and takes a few probe steps on your rows…");
  try {
    showEstimate(await api("POST", "/v1/console/estimate", jobBody()));
    setStatus(status, "estimated");
  } catch (error) {
    setStatus(status, "no estimate: " + error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function create(event) {
  event.preventDefault();
  const status = $("job-form-status");
  const button = $("job-create");
  button.disabled = true;
  setStatus(status, "creating the job…");
  try {
    const job = await api("POST", "/v1/fine_tuning/jobs", jobBody());
    window.location.assign("/console/jobs/" + encodeURIComponent(job.id));
  } catch (error) {
    setStatus(status, "not started: " + error.message, true);
    button.disabled = false;
  }
}

ready(() => {
  $("job-method").addEventListener("change", showMethodFields);
  showMethodFields();
  $("job-estimate").addEventListener("click", estimate);
  $("job-form").addEventListener("submit", create);
  loadFiles().catch((error) => setStatus($("job-form-status"), "files not listed: " + error.message, true));
});
