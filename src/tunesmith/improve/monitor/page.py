"""The monitor as one self-contained HTML page: tables, plots as inline PNG, no script, so it opens
from a file, a mail attachment or the console alike."""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.improve.monitor.traffic import Traffic

if TYPE_CHECKING:
    from tunesmith.improve.monitor.report import Drift, ModelReport, MonitorReport

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}
th{background:#f3f3f3;text-align:left}img{max-width:100%}.banner{background:#fff3bf;border:2px solid #e67700;padding:0.8em 1em;
margin:1em 0;font-weight:600}.ok{background:#ebfbee;border-color:#2b8a3e}tr.flag td{background:#ffe3e3;font-weight:600}
.muted{color:#666}"""


def render_html(report: MonitorReport) -> str:
    """The whole report as one HTML document."""
    when = datetime.fromtimestamp(report.generated_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    since = (f" since {datetime.fromtimestamp(report.since, UTC).strftime('%Y-%m-%d %H:%M UTC')}"
             if report.since is not None else "")
    scope = f" of project {html.escape(report.project)}" if report.project is not None else " of every project"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith monitor</title><style>{_STYLE}</style>"
             f"</head><body><h1>tunesmith monitor</h1><p class='muted'>{when}: stored completions{scope}{since}</p>"]
    if report.retrain_suggested:
        parts.append(f"<div class='banner'>retrain suggested: {html.escape('; '.join(report.reasons))}</div>")
    else:
        parts.append("<div class='banner ok'>no retrain suggested</div>")
    for model in report.models:
        parts.append(model_section(model))
    parts.append("</body></html>")
    return "\n".join(parts)


def model_section(model: ModelReport) -> str:
    # the run folder's name, not its path: the console shows this page to projects' keys
    title = html.escape(model.name) + (f" <span class='muted'>({html.escape(Path(model.run_dir).name)})</span>"
                                       if model.run_dir
                                       else " <span class='muted'>(base model: traffic only)</span>")
    parts = [f"<h2>{title}</h2>"]
    if model.retrain_suggested:
        parts.append(f"<div class='banner'>retrain suggested: {html.escape('; '.join(model.reasons))}</div>")
    parts.append("<h3>Traffic</h3>" + traffic_table({"all": model.traffic, **{f"generation {key}": value for key, value
                                                                            in model.by_generation.items()}}))
    parts.append(image(plot_traffic(model.traffic)))
    if model.drift is not None:
        parts.append(drift_section(model.drift))
    return "\n".join(parts)


def traffic_table(columns: dict[str, Traffic]) -> str:
    rows = [("requests", lambda t: t.requests), ("error rate", lambda t: _share(t.error_rate)),
            ("latency p50 / p90 / p99 (ms)", lambda t: " / ".join(_num(t.latency_ms[k], 0) for k in ("p50", "p90", "p99"))),
            ("prompt tokens: total / mean", lambda t: f"{t.prompt_tokens['total']} / {_num(t.prompt_tokens['mean'], 1)}"),
            ("completion tokens: total / mean",
             lambda t: f"{t.completion_tokens['total']} / {_num(t.completion_tokens['mean'], 1)}"),
            ("feedback rate", lambda t: _share(t.feedback["rate"])),
            ("mean feedback score", lambda t: _num(t.feedback["mean_score"], 2)),
            ("thumbs up / down", lambda t: f"{t.feedback['thumbs_up']} / {t.feedback['thumbs_down']}"),
            ("corrections", lambda t: t.feedback["corrections"])]
    header = "<tr><th></th>" + "".join(f"<th>{html.escape(name)}</th>" for name in columns) + "</tr>"
    body = "".join(f"<tr><td>{html.escape(label)}</td>" + "".join(f"<td>{html.escape(str(cell(t)))}</td>"
                                                                    for t in columns.values()) + "</tr>"
                   for label, cell in rows)
    return f"<table>{header}{body}</table>"


def drift_section(drift: Drift) -> str:
    parts = [f"<h3>Drift: {html.escape(drift.verdict)}</h3>",
             f"<p class='muted'>{drift.live_prompts} live prompts against {drift.reference_prompts} training prompts "
             f"(baselines from same-size samples of {drift.held_out_prompts} held-out ones); {html.escape(drift.note)}.</p>"]
    if drift.figures:
        rows = "".join(
            f"<tr class='{'flag' if f.flagged else ''}'><td>{html.escape(f.name)}</td><td>{_num(f.value, 3)}</td>"
            f"<td>{_num(f.baseline, 3)}</td><td>{_num(f.noise, 3)}</td><td>{html.escape(f.threshold)}</td>"
            f"<td>{html.escape(f.verdict)}</td><td>{html.escape(f.reason)}</td></tr>" for f in drift.figures)
        parts.append("<table><tr><th>figure</th><th>value</th><th>baseline</th><th>noise (99%)</th><th>flags when</th>"
                     f"<th>verdict</th><th>why</th></tr>{rows}</table>")
    if drift.label_mix:
        mix = drift.label_mix
        cells = "".join(f"<tr><td>{html.escape(label)}</td><td>{_share(train)}</td><td>{_share(live)}</td></tr>"
                        for label, train, live in zip(mix["labels"], mix["training"], mix["live"]))
        parts.append(f"<table><tr><th>label</th><th>training</th><th>live answers</th></tr>{cells}<tr><td>no label"
                     f"</td><td>-</td><td>{_share(mix['unmapped'])}</td></tr></table>")
    if drift.length_histogram:
        parts.append(image(plot_lengths(drift)))
    return "\n".join(parts)


def plot_traffic(traffic: Traffic) -> bytes:
    plt = _pyplot()
    figure, (hourly, latency) = plt.subplots(1, 2, figsize=(10, 3.2), dpi=100)
    if traffic.requests_per_hour:
        hours = [datetime.fromtimestamp(hour, UTC) for hour, _ in traffic.requests_per_hour]
        hourly.bar(hours, [count for _, count in traffic.requests_per_hour], width=1 / 24, align="edge", color="#5c7cfa")
        hourly.tick_params(axis="x", labelrotation=30, labelsize=8)
    hourly.set_title("requests per hour (UTC)", fontsize=10)
    hourly.set_ylabel("requests")
    edges, counts = traffic.latency_histogram["edges"], traffic.latency_histogram["counts"]
    if counts:
        latency.stairs(counts, edges, fill=True, color="#2b8a3e")
    latency.set_title("latency of answered requests (ms)", fontsize=10)
    latency.set_ylabel("requests")
    return _png(figure)


def plot_lengths(drift: Drift) -> bytes:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
    edges = drift.length_histogram["edges"]
    axis.stairs(drift.length_histogram["training"], edges, label="training", color="#9e9e9e", fill=True, alpha=0.6)
    axis.stairs(drift.length_histogram["live"], edges, label="live", color="#e67700", linewidth=2)
    axis.set_title(f"prompt length ({drift.length_unit}), share of prompts", fontsize=10)
    axis.legend(fontsize=8)
    return _png(figure)


def image(png: bytes) -> str:
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    return buffer.getvalue()


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
