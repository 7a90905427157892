// The jobs page: this key's fine-tunes, newest first, each a link to its page.
import {element, listAll, ready, when} from "./workbench.js";

ready(async () => {
  const table = document.getElementById("jobs-list");
  const body = table.querySelector("tbody");
  try {
    const jobs = await listAll("/v1/fine_tuning/jobs");
    body.replaceChildren(...jobs.map((job) => {
      const row = element("tr");
      const cell = element("td");
      const link = element("a", null, job.id);
      link.href = "/console/jobs/" + encodeURIComponent(job.id);
      cell.appendChild(link);
      row.append(cell, element("td", "status-" + job.status, job.status), element("td", null, job.model),
                 element("td", "model-name", job.fine_tuned_model || ""), element("td", null, when(job.created_at)));
      return row;
    }));
    document.getElementById("jobs-empty").hidden = jobs.length > 0;
  } catch (error) {
    const row = element("tr");
    row.appendChild(element("td", "error", "not listed: " + error.message));
    body.replaceChildren(row);
  }
  table.dataset.state = "loaded";
});
