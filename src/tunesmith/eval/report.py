"""report.md and a self-contained report.html for a run: data, settings, loss curves, the
comparison with the base model, per-class metrics, confusion matrices, disagreements, and the
overfitting and forgetting notes."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import yaml

from tunesmith.eval.compare import Comparison, disagreements
from tunesmith.eval.diagnostics import forgetting_note, overfitting_notes
from tunesmith.eval.extraction import SpanComparison
from tunesmith.eval.metrics import UNPARSED
from tunesmith.eval.tool_compare import ToolComparison
from tunesmith.files import write_atomic
from tunesmith.training.metrics import read_metrics


def write_report(run_dir: Path, comparison: Comparison | None, *, perplexity: dict | None = None,
                 preference: dict | None = None, spans: SpanComparison | None = None,
                 tools: ToolComparison | None = None, graded: Any = None) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    images: dict[str, Path] = {}
    if (run_dir / "loss.png").is_file():
        images["loss"] = run_dir / "loss.png"
    if comparison is not None:
        images["comparison"] = plot_comparison(comparison, run_dir / "eval" / "comparison.png")
        if comparison.kind == "label":
            images["confusion"] = plot_confusion(comparison, run_dir / "eval" / "confusion.png")
    blocks = _blocks(run_dir, manifest, comparison, images, perplexity)
    if preference:
        blocks[-2:-2] = _preference_blocks(preference)
    if spans:
        blocks[-2:-2] = _span_blocks(spans)
    if tools:
        blocks[-2:-2] = _tool_blocks(tools)
    if graded is not None:
        blocks[-2:-2] = graded.blocks()
    markdown_path, html_path = run_dir / "report.md", run_dir / "report.html"
    # report.md last: its presence tells a resumed chain that this stage's evaluation finished
    write_atomic(html_path, _html(blocks, run_dir.name))
    write_atomic(markdown_path, _markdown(blocks, run_dir))
    return markdown_path, html_path


# A report is a list of blocks: ("h", text), ("p", text), ("table", (header, rows)), ("img", path), ("code", text)
Block = tuple[str, Any]


def _blocks(run_dir: Path, manifest: dict, comparison: Comparison | None, images: dict[str, Path],
            perplexity: dict | None = None) -> list[Block]:
    results, data = manifest["results"], manifest["data"]
    blocks: list[Block] = [("h1", f"tunesmith report: {run_dir.name}")]
    if comparison is not None:
        blocks.append(("p", _verdict(comparison)))
    blocks.append(("h", "Data"))
    rows = [[f["path"], f["format"] or "-", f["rows"], f["invalid_rows"], f["sha256"][:12]] for f in data["files"]]
    blocks.append(("table", (["file", "format", "rows", "invalid rows", "sha256"], rows)))
    blocks.append(("p", f"Training: {data['train']['examples']} examples ({data['train']['loss_tokens']} of "
                        f"{data['train']['tokens']} tokens in the loss); validation: {data['validation']['examples']} examples"
                        + (f"; test: {len(comparison.items)} rows." if comparison else ".")
                        + (f" {data['skipped_rows']} invalid rows were left out (data.skip_invalid)." if data.get("skipped_rows") else "")))
    blocks.append(("h", "Training"))
    baseline = results.get("baseline_val_loss")
    blocks.append(("p", f"Base model {manifest['base_model']['spec']}; {results['steps']} steps in {manifest['wall_seconds']:.0f} s, "
                        f"{results['train_tokens_per_s']:.0f} tokens/s, peak memory {results['peak_memory_mb']:.0f} MB. "
                        + (f"Validation loss {baseline:.3f} before training, {results['val_loss']:.3f} after."
                           if baseline is not None and results.get("val_loss") is not None else "")))
    if "loss" in images:
        blocks.append(("img", images["loss"]))
    records = read_metrics(run_dir / "metrics.jsonl")
    rollouts = _rollout_blocks(records)
    blocks.extend(rollouts)
    for note in [] if rollouts else overfitting_notes(records):  # on-policy runs validate by reward, not loss
        blocks.append(("p", note))
    if perplexity:
        blocks.append(("h", "Perplexity before and after"))
        rows = [[name if name == "domain" else f"general ({values['source']}, {values['documents']} documents)",
                 f"{values['before']:.2f}", f"{values['after']:.2f}", f"x{values['after'] / values['before']:.3f}"]
                for name, values in perplexity.items()]
        blocks.append(("table", (["text", "before", "after", "ratio"], rows)))
        blocks.append(("p", "Held-out domain text should get easier to predict (ratio below 1); general text "
                            "should not get much harder (ratio near 1), or the model is forgetting."))
    if comparison is not None:
        blocks.extend(_comparison_blocks(comparison, images))
    blocks.append(("h", "Settings"))
    blocks.append(("code", yaml.safe_dump(manifest["config"], sort_keys=False)))
    return blocks


ROLLOUT_FIGURES = {"reward_mean": "reward mean", "reward_std": "reward std", "kl": "KL",
                   "completion_length_mean": "length", "no_signal_share": "no signal", "clip_fraction": "clipped"}


def _rollout_blocks(records: list[dict], shown: int = 8) -> list[Block]:
    """On-policy runs: what the rollouts scored as training went, at up to `shown` steps spread over the
    run (every step's figures are in metrics.jsonl): each sub-grader's mean reward beside the total."""
    rollouts = [r for r in records if "reward_mean" in r]
    if not rollouts:
        return []
    picked = [rollouts[round(i * (len(rollouts) - 1) / (shown - 1))] for i in range(shown)] if len(rollouts) > shown else rollouts
    picked = list({r["step"]: r for r in picked}.values())
    parts = sorted({k for r in rollouts for k in r if k.startswith("reward_") and k not in ROLLOUT_FIGURES})
    columns = [k for k in ROLLOUT_FIGURES if any(k in r for r in picked)] + parts
    header = ["step", *(ROLLOUT_FIGURES.get(k, k.removeprefix("reward_")) for k in columns)]
    rows = [[r["step"], *(_number(r[k]) if k in r else "-" for k in columns)] for r in picked]
    return [("p", "Rollouts: each step's sampled completions as the reward scored them (mean and spread), the KL to "
                  "the reference, the completions' mean length in tokens, the share of groups whose rewards all tie "
                  "(no signal), and the share of tokens whose policy ratio was clipped"
                  + (f"; each sub-grader's mean reward ({', '.join(p.removeprefix('reward_') for p in parts)})" if parts else "")
                  + ". Every step: metrics.jsonl; every sample: rounds/."),
            ("table", (header, rows))]


def _comparison_blocks(comparison: Comparison, images: dict[str, Path]) -> list[Block]:
    if len(comparison.systems) > 1:
        blocks: list[Block] = [("h", "Fine-tuned vs base model"),
                               ("p", f"The same {len(comparison.items)} held-out rows, greedy decoding, the same prompt template; "
                                     f"few-shot examples ({comparison.few_shot}, chosen {comparison.selection}) come from the training rows.")]
    else:
        blocks = [("h", "Held-out evaluation"), ("p", f"{len(comparison.items)} held-out rows.")]
    blocks.append(("table", comparison.cells()))
    blocks.append(("p", f"{comparison.verdict()} Intervals: 95% paired bootstrap over the rows (the same resampled "
                        "rows for every system); a gain is the tuned model's score minus that system's."
                        + (" Scored by the likelihood of each label (rank classification); 'generated = most likely' "
                           "counts the generated answers that name that label (a seeded sample for the baselines)."
                           if comparison.kind == "label" and comparison.scoring == "likelihood" else "")))
    for note in comparison.notes:  # leakage, retrieval, accuracy by group
        blocks.append(("p", f"Note: {note}"))
    blocks.append(("img", images["comparison"]))
    if comparison.kind == "label":
        blocks.append(("h", "Per class"))
        for system in comparison.systems:
            per_class = system.metrics["per_class"]
            rows = [[label, _number(v["precision"]), _number(v["recall"]), _number(v["f1"]), v["support"]] for label, v in per_class.items()]
            rows.append(["macro", _number(system.metrics["macro_precision"]), _number(system.metrics["macro_recall"]),
                         _number(system.metrics["macro_f1"]), sum(v["support"] for v in per_class.values())])
            blocks.append(("p", f"{system.name}: {system.metrics['unparsed']} answers matched no label "
                                f"(mapping rules used: {', '.join(f'{k} {v}' for k, v in system.metrics['rules'].items())})."))
            blocks.append(("table", (["label", "precision", "recall", "F1", "support"], rows)))
        blocks.append(("img", images["confusion"]))
    note = forgetting_note(comparison.forgetting)
    if note:
        blocks.append(("h", "Forgetting"))
        blocks.append(("p", note))
    examples = disagreements(comparison)
    if examples:
        blocks.append(("h", f"Where the systems disagree ({len(examples)} rows)"))
        names = [s.name for s in comparison.systems]
        rows = [[e["where"].rsplit("/", 1)[-1], _short(e["input"]), e["reference"][:80], *(_short(e[n], 80) for n in names)] for e in examples]
        blocks.append(("table", (["row", "input", "reference", *names], rows)))
    return blocks


def _preference_blocks(figures: dict) -> list[Block]:
    blocks: list[Block] = [("h", "Preferences")]
    if "win_rate" in figures:
        blocks.append(("p", f"On {figures['prompts']} held-out prompts, under the reward `{figures['reward']}`, the tuned "
                            f"model's greedy answer beat the starting model's {figures['wins']} times, tied "
                            f"{figures['ties']} times and lost {figures['losses']} times: win rate "
                            f"{figures['win_rate']:.3f}. Mean reward {figures['base_mean_reward']:.3f} before, "
                            f"{figures['tuned_mean_reward']:.3f} after. Every prompt and both answers: eval/win_rate.jsonl; "
                            "every training round's samples and pairs: rounds/."))
    else:
        rows = [[name.replace("_", " "), f"{values['before']:.3f}", f"{values['after']:.3f}"]
                for name, values in figures.items() if isinstance(values, dict) and values.get("before") is not None]
        blocks.append(("table", (["held-out pairs", "before", "after"], rows)))
        blocks.append(("p", "Reward accuracy: how often the implicit reward of the chosen reply exceeds the rejected "
                            "one's (ties count half, so 0.5 before any training). Likelihood accuracy: how often the "
                            "model gives the chosen reply the higher log-probability per token."))
    return blocks


def _span_blocks(comparison: SpanComparison) -> list[Block]:
    what = ("Entities scored as seqeval scores them (a found entity counts only with its type and both boundaries "
            "right)" if comparison.task == "entities" else "Answers scored as the official SQuAD script scores them "
            "(normalized exact match and token F1, the best over the gold answers)")
    blocks: list[Block] = [("h", "Fine-tuned vs prompting the base model"),
                           ("p", f"{what}, on the same {len(comparison.rows)} held-out rows. The prompted baselines' "
                                 "replies are parsed into the same form and scored by the same code"
                                 + (f"; few-shot examples ({comparison.few_shot}) come from the training rows." if comparison.few_shot else ".")
                                 + " Each figure has its 95% bootstrap interval over the rows.")]
    blocks.append(("table", comparison.cells()))
    if comparison.intervals.get("gains"):
        blocks.append(("p", comparison.verdict()))
    for note in comparison.notes:
        blocks.append(("p", f"Note: {note}"))
    if comparison.task == "entities":
        for system in comparison.systems:
            per_type = system.metrics["per_type"]
            rows = [[kind, _number(v["precision"]), _number(v["recall"]), _number(v["f1"]), v["support"]] for kind, v in per_type.items()]
            blocks.append(("p", f"{system.name}, per entity type"
                                + (f"; types confused (gold -> found, same boundaries): "
                                   f"{', '.join(f'{k} x{v}' for k, v in system.metrics['confusion'].items() if k.split(' -> ')[0] != k.split(' -> ')[1])}"
                                   if any(k.split(' -> ')[0] != k.split(' -> ')[1] for k in system.metrics["confusion"]) else "") + ":"))
            blocks.append(("table", (["type", "precision", "recall", "F1", "support"], rows)))
    blocks.append(("p", "Every row's answer from every system: eval/predictions.jsonl."))
    return blocks


def _tool_blocks(comparison: ToolComparison) -> list[Block]:
    blocks: list[Block] = [("h", "Tool use: fine-tuned vs prompting the base model"),
                           ("p", f"The same {len(comparison.where)} held-out rows with their tools, greedy decoding. Turn by "
                                 "turn: each assistant turn asked with the conversation before it; call accuracy (the right "
                                 "functions, or rightly none), arguments exact after JSON normalization, per-argument "
                                 "accuracy, and the share of calls that parse and validate against their schema (95% "
                                 "intervals over the turns). End to end: the question answered with the tools running "
                                 "for real, right only when the calls and the final answer are (intervals over the rows)"
                                 + (f"; few-shot examples ({comparison.few_shot} solved conversations) come from the "
                                    "training rows." if comparison.few_shot else "."))]
    blocks.append(("table", comparison.cells()))
    blocks.append(("p", comparison.verdict()))
    for note in comparison.notes:
        blocks.append(("p", f"Note: {note}"))
    blocks.append(("p", "Every row's exchange from every system: eval/predictions.jsonl."))
    return blocks


def _verdict(comparison: Comparison) -> str:
    metric = comparison.primary
    parts = [f"{s.name} {s.metrics[metric]:.3f}" for s in comparison.systems]
    return (f"{metric.replace('_', ' ')} on {len(comparison.items)} held-out rows: " + ", ".join(parts) + ". "
            + comparison.verdict())


def plot_comparison(comparison: Comparison, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in comparison.headline if m != "reference_ppl"]
    figure, axis = plt.subplots(figsize=(7, 3.6), dpi=110)
    width = 0.8 / len(comparison.systems)
    colours = ["#9e9e9e", "#5c7cfa", "#2b8a3e", "#e67700"]
    for number, system in enumerate(comparison.systems):
        values = [system.metrics.get(m) or 0.0 for m in metrics]
        bars = axis.bar([i + number * width for i in range(len(metrics))], values, width, label=system.name,
                        color=colours[number % len(colours)])
        axis.bar_label(bars, fmt="%.2f", fontsize=8)
    axis.set_xticks([i + width * (len(comparison.systems) - 1) / 2 for i in range(len(metrics))])
    axis.set_xticklabels([m.replace("_", " ") for m in metrics])
    axis.set_ylim(0, 1.08)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(f"{len(comparison.items)} held-out rows")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_confusion(comparison: Comparison, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = comparison.labels or []
    columns = [*labels, UNPARSED]
    figure, axes = plt.subplots(1, len(comparison.systems), figsize=(3.6 * len(comparison.systems), 3.4), dpi=110, squeeze=False)
    for axis, system in zip(axes[0], comparison.systems):
        matrix = system.metrics["confusion"]
        axis.imshow(matrix, cmap="Blues")
        for row, values in enumerate(matrix):
            for column, value in enumerate(values):
                axis.text(column, row, str(value), ha="center", va="center", fontsize=9,
                          color="white" if value > max(map(max, matrix)) / 2 else "black")
        axis.set_xticks(range(len(columns)))
        axis.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
        axis.set_yticks(range(len(labels)))
        axis.set_yticklabels(labels, fontsize=8)
        axis.set_xlabel("predicted")
        axis.set_title(system.name, fontsize=9)
    axes[0][0].set_ylabel("true")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _markdown(blocks: list[Block], run_dir: Path) -> str:
    lines: list[str] = []
    for kind, value in blocks:
        if kind == "h1":
            lines += [f"# {value}", ""]
        elif kind == "h":
            lines += [f"## {value}", ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "table":
            header, rows = value
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{value.stem}]({value.relative_to(run_dir)})", ""]
        elif kind == "code":
            lines += ["```yaml", value.rstrip(), "```", ""]
    return "\n".join(lines)


_STYLE = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}
th{background:#f3f3f3}td:not(:first-child){text-align:right}img{max-width:100%}pre{background:#f6f8fa;padding:1em;overflow:auto}"""


def _html(blocks: list[Block], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"]
    for kind, value in blocks:
        if kind == "h1":
            parts.append(f"<h1>{html.escape(value)}</h1>")
        elif kind == "h":
            parts.append(f"<h2>{html.escape(value)}</h2>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(value)}</p>")
        elif kind == "table":
            header, rows = value
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        elif kind == "img":
            encoded = base64.b64encode(value.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(value.stem)}' src='data:image/png;base64,{encoded}'>")
        elif kind == "code":
            parts.append(f"<pre>{html.escape(value)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_comparison(comparison: Any, markdown: Path, html: Path) -> None:
    """A comparison's table (every score and gain with its 95% interval), its verdict in one sentence,
    its notes, and where its report is (labels, text or spans)."""
    print(f"\n{comparison.table()}\n\n{comparison.verdict()}", flush=True)
    for note in comparison.notes:
        print(f"note: {note}")
    print(f"report: {markdown} and {html}")
