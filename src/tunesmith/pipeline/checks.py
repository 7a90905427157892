"""`tunesmith data inspect` and `validate`: what the loss sees, token by token, and every bad row.

These combine the data layer with the model's tokenizer and a training method's rules, so they sit
above all three (the drawing of tokens itself is data/inspect.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tunesmith.config import RunConfig, replace
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.inspect import GREEN, GREY, RESET, length_stats, show_inline, show_table
from tunesmith.data.pipeline import SourceData, read_source, render_source, tokenize_source
from tunesmith.data.tasks import build_label_task
from tunesmith.data.template import TemplateInfo, analyze_template, ensure_chat_template
from tunesmith.data.tools import file_uses_tools
from tunesmith.errors import DataError
from tunesmith.models.load import generation_eos, load_tokenizer, resolve_model


def _load(path: str, config: RunConfig) -> tuple[Any, TemplateInfo, str, SourceData]:
    source = resolve_model(config.model.name)
    tokenizer = load_tokenizer(source, revision=config.model.revision, trust_remote_code=config.model.trust_remote_code)
    template_source = ensure_chat_template(tokenizer, config.model.chat_template, tools=file_uses_tools(path))
    info = analyze_template(tokenizer, generation_eos(source))
    raw = read_source(resolve_data_path(path), config.data)
    task = build_label_task(raw.examples, config.task)
    return tokenizer, info, template_source, tokenize_source(render_source(raw, config.data, task), config.data, tokenizer, info)


def validate_data(path: str, config: RunConfig) -> str:
    """A one-paragraph all-clear, or a DataError listing every problem, by the rules of the training
    method the data is for (`train.method`; preference and prompt files are recognised by their rows)."""
    from tunesmith.data.formats import choose_format
    from tunesmith.data.read import read_records

    method = config.train.method
    if method == "sft":
        detected = choose_format(read_records(resolve_data_path(path)), config.data.format, config.data.columns)
        method = {"preference": "dpo", "openai_preference": "dpo", "prompt": "online-dpo"}.get(detected, method)
    if method != "sft":
        return _validate_for_method(path, replace(config, train=replace(config.train, method=method)))
    _, _, _, data = _load(path, config)
    if data.problems:
        rows = len({p.where for p in data.problems})
        raise DataError(f"{data.path}: {len(data.problems)} problem{'s' * (len(data.problems) > 1)} in {rows} of {data.rows} rows:", data.problems)
    return f"{data.path}: all {data.rows} rows are valid ({data.format} format)\n" + length_stats(data.examples, config.data.max_length)


def _validate_for_method(path: str, config: RunConfig) -> str:
    from tunesmith.training.session import get_method, load_tokenizer_and_template

    method = get_method(config.train.method)
    config = replace(config, data=replace(config.data, train=path, validation=None, validation_split=0.0, skip_invalid=False))
    source = resolve_model(config.model.name)
    tokenizer, info, _ = load_tokenizer_and_template(method, config, source)
    data = method.prepare_data(config, tokenizer, info)  # raises a DataError listing every problem
    lengths = np.array([len(e) for e in data.train])
    return (f"{data.sources[0].path}: all {data.sources[0].rows} rows are valid for train.method={method.name} "
            f"({data.sources[0].format} format); longest {lengths.max()} tokens (data.max_length={config.data.max_length})")


def inspect_data(path: str, config: RunConfig, *, rows: int = 2, table: bool = False, color: bool = False) -> str:
    tokenizer, info, template_source, data = _load(path, config)
    stop = ", ".join(repr(tokenizer.convert_ids_to_tokens(i)) for i in info.stop_token_ids)
    lines = [
        f"{data.path}: {data.rows} rows, format {data.format}, {len(data.examples)} usable"
        + (f", {len({p.where for p in data.problems})} with problems" if data.problems else ""),
        f"model {config.model.name}: chat template {template_source}; replies end with "
        f"{info.turn_end_text.strip() or repr(tokenizer.eos_token) + ' (appended)'}; generation stops on {stop}",
        length_stats(data.examples, config.data.max_length),
    ]
    for problem in data.problems[:10]:
        lines.append(f"  problem: {problem}")
    if len(data.problems) > 10:
        lines.append(f"  ... and {len(data.problems) - 10} more (tunesmith data validate lists all)")
    legend = (f"{GREEN}in the loss{RESET} / {GREY}not in the loss{RESET}" if color
              else "text inside [[ ]] is in the loss; the rest is not")
    lines.append(f"\nlegend: {legend}")
    for example in data.examples[:rows]:
        lines.append(f"\n--- {example.where}: {len(example)} tokens, {example.n_loss_tokens} in the loss")
        lines.append(show_table(example, tokenizer) if table else show_inline(example, tokenizer, color))
    return "\n".join(lines)




def audit_data(path: str, config: RunConfig, *, held_out: list[str], report_dir: str | None, output: str | None,
               dedupe: bool, scrub: bool, groups: str | None = None, pii: str = "builtin") -> str:
    """`tunesmith data audit`: the audit's summary, audit.json/.html in `report_dir`, and with
    --dedupe/--scrub the cleaned rows in a new file `output`."""
    from pathlib import Path

    from tunesmith.data.audit import run_audit
    from tunesmith.data.audit.clean import write_cleaned
    from tunesmith.data.audit.report import write_report
    from tunesmith.errors import ConfigError

    if (dedupe or scrub) and not output:
        raise ConfigError("--dedupe and --scrub write a new file: give it with -o clean.jsonl (the input is never changed)")
    source = resolve_data_path(path)
    report = run_audit(source, config.data, [resolve_data_path(p) for p in held_out], groups=groups, pii_detector=pii)
    lines = report.summary_lines()
    if report_dir:
        page = write_report(report, Path(report_dir), report.words_by_label)
        lines.append(f"report: {page} and {page.with_name('audit.json')}")
    if output:
        removed, replaced = write_cleaned(source, Path(output), duplicates=report.duplicates if dedupe else None,
                                          scrub_pii=scrub)
        done = [f"{removed} duplicate rows removed"] if dedupe else []
        done += [f"{sum(replaced.values())} values replaced ({', '.join(f'{k} {n}' for k, n in replaced.items()) or 'none'})"] if scrub else []
        lines.append(f"wrote {output}: {'; '.join(done)}; {source} is unchanged")
    return "\n".join(lines)
