// The ship page: export a succeeded fine-tune (POST /v1/console/jobs/{id}/exports) and show the
// export's own check, list earlier exports, and make another promoted generation of a served run
// current (POST /v1/console/generations/{model}/current).
import {api, bytes, element, listAll, option, query, ready, setStatus, when} from "./workbench.js";

const $ = (id) => document.getElementById(id);

// One sentence of what the export's read-back check found, by format.
function verdict(result) {
  const check = result.check;
  if (check.lora) {
    return `read back ${check.lora.pairs} LoRA pairs, products within ${(100 * check.lora.worst_relative_difference).toFixed(3)}% ` +
           `of the adapter's; use with llama.cpp's --lora on a GGUF of ${check.base}`;
  }
  if (check.verification) {
    const v = check.verification;
    return `${v.runtime}: top-token agreement with the run's model ${(100 * v.agreement).toFixed(1)}% over ${v.positions} ` +
           `positions; ${v.identical_answers} of ${v.answers.length} greedy answers identical` +
           (check.template_check ? `; Ollama template checked on ${check.template_check.length} conversations` : "");
  }
  if (check.tensors !== undefined) return `read back: ${check.tensors} tensors (${check.architecture}), answers not compared`;
  return "read back and checked";
}

function answersTable(rows) {
  const table = element("table", "table answers-table");
  const head = element("tr");
  head.append(element("th", null, "prompt"), element("th", null, "run"), element("th", null, "export"));
  table.appendChild(head);
  for (const row of rows) {
    const line = element("tr", row.run === row.export ? "same" : "differs");
    line.append(element("td", null, row.prompt), element("td", null, row.run), element("td", null, row.export));
    table.appendChild(line);
  }
  const scroll = element("div", "scroll");
  scroll.appendChild(table);
  return scroll;
}

function showExport(result, box) {
  const part = element("div", "export-done");
  part.appendChild(element("h3", null, result.id === result.format ? result.format : `${result.format} (${result.id})`));
  const files = element("ul", "plain");
  for (const file of result.files) {
    const item = element("li", "export-file");
    if (file.download) {
      const link = element("a", null, file.name);
      link.href = file.download;
      link.setAttribute("download", file.name);
      item.appendChild(link);
    } else {
      item.appendChild(element("span", null, file.name));
    }
    item.appendChild(element("span", "note", file.bytes ? ` ${bytes(file.bytes)}` : ""));
    files.appendChild(item);
  }
  part.append(files, element("p", "export-check", verdict(result)));
  if (result.check.verification) part.appendChild(answersTable(result.check.verification.answers));
  const details = element("details");
  details.append(element("summary", null, "the whole check (export.json)"),
                 element("pre", "export-json", JSON.stringify(result.check, null, 1)));
  part.appendChild(details);
  box.appendChild(part);
}

async function start(event) {
  event.preventDefault();
  const jobId = $("export-job").value;
  const status = $("export-status");
  const box = $("export-result");
  if (!jobId) return;
  $("export-start").disabled = true;
  box.replaceChildren();
  setStatus(status, "exporting: converting, then reading the file back and comparing it with the run…");
  try {
    const result = await api("POST", `/v1/console/jobs/${encodeURIComponent(jobId)}/exports`,
                             {format: $("export-format").value, quant: $("export-quant").value});
    showExport(result, box);
    setStatus(status, "exported and checked");
    await listExports();
  } catch (error) {
    box.appendChild(element("p", "error", "not exported: " + error.message));
    setStatus(status, "");
  } finally {
    $("export-start").disabled = false;
  }
}

async function listExports() {
  const box = $("exports-list");
  const jobId = $("export-job").value;
  box.replaceChildren();
  if (!jobId) return;
  const found = await api("GET", `/v1/console/jobs/${encodeURIComponent(jobId)}/exports`);
  for (const result of found.data) showExport(result, box);
  if (!found.data.length) box.appendChild(element("p", "note", "None yet."));
}

async function loadJobs() {
  let jobs;
  try {
    jobs = (await listAll("/v1/fine_tuning/jobs")).filter((job) => job.status === "succeeded");
  } catch (error) {
    setStatus($("export-status"), error.status === 404 ? "This server has no fine-tuning jobs (tunesmith serve --jobs)."
                                                        : "jobs not listed: " + error.message, true);
    return;
  }
  const wanted = query("job");
  $("export-job").replaceChildren(...jobs.map((job) => option(job.id, `${job.fine_tuned_model} (${job.id})`, job.id === wanted)));
  if (!jobs.length) setStatus($("export-status"), "No succeeded fine-tune to export yet.");
  $("export-job").addEventListener("change", () => listExports().catch(() => {}));
  await listExports().catch(() => {});
}

function generationTable(entry) {
  const table = element("table", "table");
  const head = element("tr");
  for (const title of ["generation", "from", "gate", "created", ""]) head.appendChild(element("th", null, title));
  table.appendChild(head);
  for (const generation of entry.generations) {
    const row = element("tr", generation.generation === entry.current ? "current" : "");
    const gate = generation.gate ? (generation.gate.passed === false ? "refused" : "passed") : (generation.promoted ? "promoted" : "refused");
    row.append(element("td", null, String(generation.generation)), element("td", null, generation.started_from ?? "–"),
               element("td", null, gate), element("td", null, when(generation.created)));
    const cell = element("td");
    if (generation.generation === entry.current) {
      cell.appendChild(element("strong", null, "answering now"));
    } else if (generation.promoted && entry.may_change) {
      const button = element("button", "make-current", generation.generation < entry.current ? "Roll back to it" : "Promote it again");
      button.type = "button";
      button.addEventListener("click", () => makeCurrent(entry.model, generation.generation));
      cell.appendChild(button);
    }
    row.appendChild(cell);
    table.appendChild(row);
  }
  return table;
}

async function makeCurrent(model, generation) {
  try {
    await api("POST", `/v1/console/generations/${encodeURIComponent(model)}/current`, {generation});
  } catch (error) {
    setStatus($("generations"), "not changed: " + error.message, true);
    return;
  }
  await loadGenerations();
}

async function loadGenerations() {
  const box = $("generations");
  const found = await api("GET", "/v1/console/generations");
  box.replaceChildren();
  for (const entry of found.data) {
    const part = element("section", "lineage");
    part.dataset.model = entry.model;
    part.appendChild(element("h3", null, entry.model));
    const scroll = element("div", "scroll");
    scroll.appendChild(generationTable(entry));
    part.appendChild(scroll);
    if (!entry.may_change) part.appendChild(element("p", "note", "Shared by every project: only the operator's key changes it."));
    box.appendChild(part);
  }
  if (!found.data.length) box.appendChild(element("p", "note", "No served run of this key has generations."));
  box.dataset.state = "loaded";
}

ready(() => {
  $("export-form").addEventListener("submit", start);
  loadJobs();
  loadGenerations().catch((error) => setStatus($("generations"), "not listed: " + error.message, true));
});
