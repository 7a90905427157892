// The compare page: one prompt, answered side by side by each model ticked (the base, fine-tuned
// models, generations: whatever GET /v1/models shows this key), and the evaluations of two
// fine-tunes side by side (GET /v1/console/jobs/{id}/evaluation).
import {api, element, listAll, number, option, query, ready, setStatus} from "./workbench.js";

const $ = (id) => document.getElementById(id);
const CHAT_KINDS = ["base", "adapter", "model"];

async function loadModels() {
  const box = $("compare-models");
  const wanted = (query("models") || "").split(",").filter(Boolean);
  const models = (await api("GET", "/v1/models")).data.filter((m) => !m.kind || CHAT_KINDS.includes(m.kind));
  const rank = (m) => (wanted.includes(m.id) ? wanted.indexOf(m.id) : wanted.length);
  models.sort((a, b) => rank(a) - rank(b));
  box.replaceChildren(...models.map((model, index) => {
    const label = element("label", "choice");
    const box = element("input", "compare-model");
    box.type = "checkbox";
    box.value = model.id;
    box.checked = wanted.length ? wanted.includes(model.id) : index < 2;
    label.append(box, element("span", null, ` ${model.id}`),
                 element("span", "note", model.parent ? ` (${model.kind} of ${model.parent})` : ` (${model.kind || "model"})`));
    return label;
  }));
  if (!models.length) box.appendChild(element("p", "note", "No chat model is served to this key."));
  box.dataset.state = "loaded";
}

async function ask(model, prompt, column) {
  try {
    const reply = await api("POST", "/v1/chat/completions",
                            {model, temperature: 0, messages: [{role: "user", content: prompt}]});
    column.querySelector(".answer-text").textContent = reply.choices[0].message.content;
    column.dataset.state = "answered";
  } catch (error) {
    column.querySelector(".answer-text").textContent = "no answer: " + error.message;
    column.classList.add("error");
    column.dataset.state = "failed";
  }
}

function send(event) {
  event.preventDefault();
  const prompt = $("compare-prompt").value.trim();
  const models = [...document.querySelectorAll(".compare-model:checked")].map((box) => box.value);
  if (!prompt || !models.length) return;
  const answers = $("answers");
  answers.replaceChildren(...models.map((model) => {
    const column = element("section", "answer panel");
    column.dataset.model = model;
    column.dataset.state = "waiting";
    column.append(element("h2", "answer-model", model), element("p", "answer-text", "…"));
    return column;
  }));
  for (const column of answers.children) ask(column.dataset.model, prompt, column);
}

// {a: {b: 1}} -> [["a.b", 1]]: every number of an evaluation, by its path
function flatten(value, prefix, rows) {
  if (typeof value === "number") rows.push([prefix, value]);
  else if (value && typeof value === "object" && rows.length < 400) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, rows);
  }
  return rows;
}

async function evaluation(jobId) {
  if (!jobId) return new Map();
  const result = await api("GET", `/v1/console/jobs/${encodeURIComponent(jobId)}/evaluation`);
  return new Map([...flatten(result.last_metrics, "last step", []), ...flatten(result.comparison, "test", [])]);
}

async function showEvaluations() {
  const table = $("eval-table");
  const [a, b] = [$("eval-a").value, $("eval-b").value];
  try {
    const [left, right] = await Promise.all([evaluation(a), evaluation(b)]);
    const head = element("tr");
    head.append(element("th", null, "metric"), element("th", null, a || "–"), element("th", null, b || "–"));
    const rows = [...new Set([...left.keys(), ...right.keys()])].map((key) => {
      const row = element("tr");
      row.append(element("th", null, key), element("td", null, left.has(key) ? number(left.get(key)) : "–"),
                 element("td", null, right.has(key) ? number(right.get(key)) : "–"));
      row.firstChild.scope = "row";
      return row;
    });
    const thead = element("thead");
    thead.appendChild(head);
    const tbody = element("tbody");
    tbody.append(...rows);
    table.replaceChildren(thead, tbody);
  } catch (error) {
    table.replaceChildren(element("caption", "error", "no evaluation: " + error.message));
  }
}

async function loadJobs() {
  let jobs;
  try {
    jobs = (await listAll("/v1/fine_tuning/jobs")).filter((job) => job.status === "succeeded");
  } catch (error) {
    $("eval-table").replaceChildren(element("caption", "note", error.status === 404
      ? "This server has no fine-tuning jobs (tunesmith serve --jobs)." : "jobs not listed: " + error.message));
    return;
  }
  const first = query("job") || (jobs[0] && jobs[0].id) || "";
  const second = (jobs.find((job) => job.id !== first) || {}).id || "";
  for (const [id, chosen] of [["eval-a", first], ["eval-b", second]]) {
    $(id).replaceChildren(option("", "none"), ...jobs.map((job) => option(job.id, `${job.id} · ${job.fine_tuned_model}`, job.id === chosen)));
    $(id).addEventListener("change", showEvaluations);
  }
  await showEvaluations();
}

ready(() => {
  $("compare-form").addEventListener("submit", send);
  $("compare-prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("compare-form").requestSubmit();
    }
  });
  loadModels().catch((error) => setStatus($("answers"), "models not listed: " + error.message, true));
  loadJobs();
});
