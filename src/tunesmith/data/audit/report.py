"""audit.json (stable keys, `version`) and a self-contained audit.html with the label balance and
length plots embedded as PNG."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from tunesmith.data.audit import AuditReport
from tunesmith.files import write_atomic, write_json_atomic


def write_report(report: AuditReport, folder: Path, lengths_by_label: dict[str, list[int]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "audit.json", report.as_dict())
    body = [f"<h1>Data audit: {html.escape(report.source)}</h1>", "<pre>",
            html.escape("\n".join(report.summary_lines(examples=20))), "</pre>"]
    if report.labels:
        body.append(_plot_labels(report.labels["counts"], lengths_by_label or {}))
    if report.findings:
        body.append("<h2>Rows to look at</h2><table><tr><th>row</th><th>check</th><th>what</th><th>fix</th></tr>")
        body += [f"<tr><td>{html.escape(f.where)}</td><td>{f.check}</td><td>{html.escape(f.what)}</td>"
                 f"<td>{html.escape(f.fix)}</td></tr>" for f in report.findings]
        body.append("</table>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>tunesmith data audit</title><style>"
            "body{font-family:sans-serif;max-width:70em;margin:2em auto}td,th{border-bottom:1px solid #ddd;"
            "padding:.2em .5em;text-align:left}pre{white-space:pre-wrap}</style></head><body>"
            + "\n".join(body) + "</body></html>")
    return write_atomic(folder / "audit.html", page)


def _plot_labels(counts: dict[str, int], lengths: dict[str, list[int]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.bar(list(counts), list(counts.values()), color="#4c72b0")
    left.set_title("rows per label")
    for label, values in lengths.items():
        right.hist(values, bins=30, alpha=0.5, label=label)
    right.set_title("words per row, by label")
    if lengths:
        right.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return f"<img alt='label balance and lengths' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
