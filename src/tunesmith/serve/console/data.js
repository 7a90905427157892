// The data page: upload a file (dropped or chosen) to the files API, then ask POST /v1/console/check
// what a fine-tune would make of it: each bad line, the data audit, the first rows as the model
// sees them (the rendered template, the trained spans marked).
import {api, element, fileLabel, listAll, option, ready, setStatus} from "./workbench.js";

const $ = (id) => document.getElementById(id);
let shown = null;  // the file id whose check is on the page

function jobBody(fileId) {
  const [type, method] = $("data-method").value.split(":");
  const body = {model: $("data-model").value, training_file: fileId, method: {type}};
  const settings = {};
  if (method) settings.method = method;
  if ($("data-test-file").value) settings.test_file = $("data-test-file").value;
  if (Object.keys(settings).length) body.tunesmith = settings;
  return body;
}

async function refreshFiles() {
  const list = $("data-files");
  const files = await listAll("/v1/files?purpose=fine-tune");
  const held = $("data-test-file");
  const chosen = held.value;
  held.replaceChildren(option("", "none"), ...files.map((f) => option(f.id, fileLabel(f), f.id === chosen)));
  list.replaceChildren(...files.map((file) => {
    const item = element("li", "file");
    item.appendChild(element("span", "file-name", fileLabel(file)));
    const button = element("button", "file-check secondary", "Check");
    button.type = "button";
    button.dataset.file = file.id;
    button.setAttribute("aria-label", `check ${file.filename}`);
    button.addEventListener("click", () => check(file.id));
    item.appendChild(button);
    return item;
  }));
  if (!files.length) list.appendChild(element("li", "note", "No file uploaded yet."));
  list.dataset.state = "loaded";
}

async function upload(file) {
  const status = $("upload-status");
  setStatus(status, `uploading ${file.name}…`);
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  try {
    const row = await api("POST", "/v1/files", form);
    await refreshFiles();
    await check(row.id);
  } catch (error) {
    setStatus(status, "not uploaded: " + error.message, true);
  }
}

async function check(fileId) {
  const status = $("upload-status");
  shown = fileId;
  setStatus(status, `checking ${fileId} (the model's tokenizer is loaded; a large file takes a while)…`);
  try {
    const result = await api("POST", "/v1/console/check", jobBody(fileId));
    if (shown !== fileId) return;
    showValidation(result.validation);
    showAudit(result.audit);
    showPreview(result.preview);
    $("data-fine-tune").href = "/console/jobs/new?training_file=" + encodeURIComponent(fileId);
    $("check").hidden = false;
    setStatus(status, `checked ${fileId}`);
  } catch (error) {
    setStatus(status, "not checked: " + error.message, true);
  }
}

function showValidation(results) {
  const box = $("validation");
  box.replaceChildren();
  for (const result of results) {
    const part = element("div", result.ok ? "validation-ok" : "validation-bad");
    part.appendChild(element("p", "summary", (result.ok ? "✓ " : "✗ ") + result.summary));
    if (result.problems.length) {
      const list = element("ol", "problems");
      for (const problem of result.problems) {
        const item = element("li", "problem", (problem.line ? `line ${problem.line}: ` : "") + problem.what +
                                              (problem.fix ? ` (${problem.fix})` : ""));
        if (problem.line) item.dataset.line = problem.line;
        list.appendChild(item);
      }
      part.appendChild(list);
    }
    box.appendChild(part);
  }
}

function showAudit(audit) {
  const box = $("audit");
  box.replaceChildren();
  if (!audit) {
    box.appendChild(element("p", "note", "No audit for this method (or data.audit=off)."));
    return;
  }
  box.appendChild(element("p", audit.clean ? "audit-clean" : "audit-warn",
                          audit.clean ? "Nothing to look at." : "Worth a look before training:"));
  const list = element("ul", "audit-lines");
  for (const line of audit.lines) list.appendChild(element("li", line.startsWith("  ") ? "detail" : "", line.trim()));
  box.appendChild(list);
}

function showPreview(preview) {
  const box = $("preview");
  box.replaceChildren();
  if (!preview) {
    box.appendChild(element("p", "note", "Fix the rows above to see them as the model will."));
    return;
  }
  if (preview.note) box.appendChild(element("p", "note", preview.note));
  for (const row of preview.rows) {
    const part = element("section", "preview-row");
    part.appendChild(element("h3", null, `${row.where}: ${row.tokens} tokens, ${row.loss_tokens} in the loss`));
    const text = element("pre", "rendered");
    for (const span of row.spans) text.appendChild(element(span.trained ? "mark" : "span", span.trained ? "trained" : "context", span.text));
    part.appendChild(text);
    box.appendChild(part);
  }
}

function startDropZone() {
  const zone = $("drop-zone");
  const input = $("data-file");
  input.addEventListener("change", () => {
    if (input.files.length) upload(input.files[0]);
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
  });
}

ready(() => {
  startDropZone();
  for (const id of ["data-model", "data-method", "data-test-file"]) {
    $(id).addEventListener("change", () => { if (shown) check(shown); });
  }
  refreshFiles().catch((error) => setStatus($("upload-status"), "files not listed: " + error.message, true));
});
