// A job's page: its status, events and checkpoints polled from the jobs API while it is live, the
// loss curves drawn from its metrics events as they arrive, pause / resume / cancel, and once it
// has succeeded the links to compare it with its base, to export it, and to its report.
import {drawLoss} from "./chart.js";
import {api, element, listAll, number, ready, setStatus, when} from "./workbench.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = ["succeeded", "failed", "cancelled"];
const POLL_MS = 1500;
const seen = new Set();  // ids of the events on the page
let events = [];  // every event seen, newest first (the API's order)
let jobId = null;

// New events since the last look: newest pages until one holds an event already seen.
async function newEvents() {
  let after = null;
  const fresh = [];
  for (;;) {
    const url = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/events?limit=100` +
                (after ? "&after=" + encodeURIComponent(after) : "");
    const page = await api("GET", url);
    let known = false;
    for (const event of page.data) {
      if (seen.has(event.id)) {
        known = true;
      } else {
        seen.add(event.id);
        fresh.push(event);
      }
    }
    if (known || !page.has_more || !page.data.length) break;
    after = page.last_id;
  }
  events = fresh.concat(events);
}

function showJob(job) {
  $("job-status").textContent = job.status;
  $("job-status").className = "status-" + job.status;
  $("job-base").textContent = job.model;
  const type = job.method.type;
  const settings = job.method[type] && job.method[type].hyperparameters;
  $("job-method").textContent = type + (settings ? " · " + Object.entries(settings)
    .filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k} ${number(v)}`).join(", ") : "");
  $("job-model-name").textContent = job.fine_tuned_model || "(when it succeeds)";
  $("job-error").textContent = job.error ? job.error.message : "";
  const live = !TERMINAL.includes(job.status);
  $("job-pause").disabled = !["running", "queued", "validating_files"].includes(job.status);
  $("job-resume").disabled = job.status !== "paused";
  $("job-cancel").disabled = !live;
  const done = job.status === "succeeded" && job.fine_tuned_model;
  $("job-compare").hidden = $("job-ship").hidden = !done;
  if (done) {
    $("job-compare").href = "/console/compare?models=" + encodeURIComponent(job.model + "," + job.fine_tuned_model) +
                            "&job=" + encodeURIComponent(job.id);
  }
}

function showEvents() {
  const list = $("events");
  list.replaceChildren(...events.slice(0, 200).map((event) => {
    const item = element("li", "event level-" + event.level);
    item.append(element("time", null, when(event.created_at)), element("span", "event-message", event.message));
    return item;
  }));
  const points = events.filter((e) => e.type === "metrics" && e.data && typeof e.data.step === "number").map((e) => e.data);
  drawLoss($("loss-chart"), points);
}

async function showCheckpoints() {
  const checkpoints = await listAll(`/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/checkpoints`);
  $("checkpoints").replaceChildren(...checkpoints.map((checkpoint) => {
    const metrics = checkpoint.metrics || {};
    const item = element("li", "checkpoint");
    const losses = [["training loss", metrics.train_loss], ["validation loss", metrics.valid_loss]]
      .filter(([, value]) => typeof value === "number").map(([name, value]) => `${name} ${number(value)}`);
    item.append(element("strong", null, `step ${checkpoint.step_number}`), element("span", null, losses.join(", ")),
                element("code", "checkpoint-name", checkpoint.fine_tuned_model_checkpoint));
    return item;
  }));
  if (!checkpoints.length) $("checkpoints").appendChild(element("li", "note", "None yet."));
}

async function showReportLink(job) {
  if (job.status !== "succeeded") return;
  try {
    const evaluation = await api("GET", `/v1/console/jobs/${encodeURIComponent(jobId)}/evaluation`);
    $("job-report").hidden = !evaluation.report;
  } catch (error) {
    $("job-report").hidden = true;
  }
}

async function refresh() {
  const job = await api("GET", "/v1/fine_tuning/jobs/" + encodeURIComponent(jobId));
  await newEvents();
  await showCheckpoints();
  showJob(job);
  showEvents();
  return job;
}

async function poll() {
  let job = null;
  try {
    job = await refresh();
  } catch (error) {
    setStatus($("job-error"), "not refreshed: " + error.message, true);
  }
  if (job && TERMINAL.includes(job.status)) {
    await showReportLink(job);
    return;
  }
  window.setTimeout(poll, POLL_MS);
}

function control(action) {
  return async () => {
    try {
      await api("POST", `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}/${action}`);
      await refresh();  // the poll, still running while the job is live, carries on
    } catch (error) {
      setStatus($("job-error"), `not ${action}d: ` + error.message, true);
    }
  };
}

ready(() => {
  jobId = $("job").dataset.job;
  for (const action of ["pause", "resume", "cancel"]) $("job-" + action).addEventListener("click", control(action));
  poll();
});
