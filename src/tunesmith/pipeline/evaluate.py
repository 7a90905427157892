"""Whole jobs built from the stages: train, then (when the config asks) evaluate and report.

The CLI and the Python API call these; the stages themselves never call each other upward.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from tunesmith.config import (
    DataConfig,
    EvalConfig,
    RunConfig,
    dump_config,
    load_config,
    stage_config,
    stage_name,
)
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Example, Problem
from tunesmith.data.prompting import PromptedRow, prompt_rows
from tunesmith.data.tasks import LabelTask
from tunesmith.errors import DataError, RunError
from tunesmith.eval.classifier import evaluate_classifier, load_classifier
from tunesmith.eval.compare import (
    Comparison,
    SystemResult,
    answer_budget,
    evaluate_system,
    general_text_forgetting,
    run_comparison,
    save_comparison,
)
from tunesmith.eval.extraction import SpanComparison
from tunesmith.eval.items import EvalItem, load_items
from tunesmith.eval.metrics import normalize
from tunesmith.eval.preference import pair_accuracy_summary, win_rate
from tunesmith.eval.report import write_report
from tunesmith.files import write_atomic
from tunesmith.models.generate import load_for_generation
from tunesmith.models.processes import ALONE, Share
from tunesmith.training.distributed.world import World, environment_world
from tunesmith.training.metrics import perplexity
from tunesmith.training.run_folder import (
    RunFolder,
    check_replaceable,
    check_same_config,
    make_run_folder,
    remove_run_folder,
    run_name,
)
from tunesmith.training.session import RunResult, check_distributed, run_method, say
from tunesmith.training.tracking import report_results


def train(config: RunConfig, *, resume: bool = False, show_progress: bool = True) -> RunResult:
    """Train (every stage, when the config has `stages`); then evaluate as the method and config
    ask, and write the report."""
    world = environment_world()
    check_distributed(config, world, resume)
    if config.stages:
        return train_stages(config, resume=resume, show_progress=show_progress)
    if world.is_main:
        audit_before_training(config)
    result = run_method(config, resume=resume, show_progress=show_progress)
    share = evaluation_share(result, world) if shares_decoding(result.method, config.eval) else ALONE
    if not world.is_main:  # its share of the held-out decoding; rank 0 writes the report
        if share.size > 1:
            evaluate_after_training(result, config, share)
        return result
    evaluate_after_training(result, config, share)
    report_results(config.output.report_to, result.run_dir, config.output.dir)
    return result


def evaluation_share(result: RunResult, world: World) -> Share:
    """The processes that evaluate the run together: all of them once rank 0 has written the run's
    model, when every one can read it (one machine, or a file system the machines share); else
    rank 0 alone."""
    if world.size == 1:
        return ALONE
    world.barrier()  # rank 0 has written the model and the manifest
    readable = world.gather((result.run_dir / "manifest.json").is_file())
    return Share(world.rank, world.size) if all(readable) else ALONE


def shares_decoding(method: str, settings: EvalConfig) -> bool:
    """Whether the evaluation after training shares its decoding out over the processes: eval.test
    on a generative or a classification run. The others run on rank 0 alone."""
    return bool(settings.test) and method not in ("token-classify", "extractive-qa", "pretrain", "dpo", "online-dpo")


def train_stages(config: RunConfig, *, resume: bool = False, show_progress: bool = True) -> RunResult:
    """Each stage a run of its own under <run>/stages/, starting from the previous stage's model.

    A finished stage (its manifest written) is not run again on --resume; the first unfinished one
    continues from its last checkpoint, or starts. lineage.json records every stage as it finishes.
    """
    root = Path(config.output.dir) / run_name(config)
    lineage_path = root / "lineage.json"
    if resume and not lineage_path.exists():
        raise RunError(f"{root}: no chained run to resume; run without --resume to start it")
    if not resume:
        check_replaceable(root, config.output.overwrite)

    def start_chain() -> None:
        """Replace an earlier chain (only now that the first stage's data and model have loaded)."""
        if root.exists() and not resume:
            remove_run_folder(root)
        if not root.exists():
            make_run_folder(root)
        if not lineage_path.exists():
            write_atomic(root / "config.yaml", dump_config(config))
            _write_lineage(root, config, [])

    if resume:
        check_same_config(RunFolder(root), config)
    model, stages, result = config.model.name, [], None
    for number in range(len(config.stages)):
        name = stage_name(config, number)
        stage = replace(stage_config(config, number, model=model),
                        output=replace(config.output, dir=str(root / "stages"), name=name, overwrite=False, save_merged=True))
        folder = root / "stages" / name
        finished = (folder / "manifest.json").is_file()
        if finished and resume:
            say(f"stage {name}: finished earlier")
            if not (folder / "report.md").is_file():  # killed after training, before its evaluation
                evaluate_after_training(_result_from_manifest(folder), stage)
                report_results(stage.output.report_to, folder, stage.output.dir)
            result_model = json.loads((folder / "manifest.json").read_text())["outputs"]["model"]
        else:
            stage_resume = resume and (folder / "checkpoints").is_dir()
            say(f"stage {name} ({stage.train.method}) from {model}")
            # A stage killed before its first checkpoint starts over: its folder is replaced once the
            # stage's data and model have loaded (a tunesmith run folder; anything else is refused).
            stage = replace(stage, output=replace(stage.output, overwrite=True)) if not stage_resume else stage
            result = run_method(stage, resume=stage_resume, show_progress=show_progress,
                                before_start=start_chain if number == 0 else None)
            evaluate_after_training(result, stage)
            report_results(stage.output.report_to, result.run_dir, stage.output.dir)
            result_model = result.outputs["model"]
        stages.append(_stage_record(number, name, folder, model, result_model))
        _write_lineage(root, config, stages)
        model = result_model
    if result is None:  # every stage had finished before
        result = _result_from_manifest(root / "stages" / stages[-1]["name"])
    return result


def _stage_record(number: int, name: str, folder: Path, started_from: str, model: str) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {"stage": number + 1, "name": name, "method": manifest["method"], "started_from": started_from,
            "data": [{"path": f["path"], "sha256": f["sha256"], "rows": f["rows"]} for f in manifest["data"]["files"]],
            "run_folder": str(folder), "model": model, "results": manifest["results"], "finished": manifest["finished"]}


def _write_lineage(root: Path, config: RunConfig, stages: list[dict]) -> None:
    lineage = {"base_model": config.model.name, "stages_planned": [stage_name(config, n) for n in range(len(config.stages))],
               "stages": stages, "final_model": stages[-1]["model"] if len(stages) == len(config.stages) else None}
    write_atomic(root / "lineage.json", json.dumps(lineage, indent=1))


def _result_from_manifest(folder: Path) -> RunResult:
    manifest = json.loads((folder / "manifest.json").read_text())
    r = manifest["results"]
    return RunResult(folder, manifest["method"], r["steps"], r["train_loss"], r["val_loss"], r["baseline_val_loss"],
                     r["best_step"], r["stopped_early"], r["train_tokens_per_s"], r["peak_memory_mb"],
                     r.get("train_seconds", 0.0), manifest["outputs"])


def evaluate_after_training(result: RunResult, config: RunConfig, share: Share = ALONE) -> None:
    """What the method and config ask for after training. With a `share` of several processes
    (each calls this), the held-out decoding of eval.test is shared out over them and rank 0
    writes; the other evaluations run on rank 0 alone."""
    if shares_decoding(result.method, config.eval):
        if share.size > 1:
            say(f"evaluation: the rows of {config.eval.test} shared out over {share.size} processes")
        evaluate = evaluate_classifier_run if result.method == "classify" else evaluate_run
        result.comparison = evaluate(result.run_dir, config.eval.test, config.eval, share=share)
        return
    if not share.writes:
        return
    if result.method == "classify":
        write_report(result.run_dir, None)
    elif result.method in ("token-classify", "extractive-qa"):
        if config.eval.test:
            result.comparison = evaluate_span_run(result.run_dir, config.eval.test, config.eval)
        else:
            write_report(result.run_dir, None)
    elif result.method == "pretrain":
        result.comparison = None
        write_report(result.run_dir, None, perplexity=pretrain_perplexity(result, config.eval))
    elif result.method in ("dpo", "online-dpo"):
        figures = pair_accuracy_summary(result.run_dir) if result.method == "dpo" else win_rate(result.run_dir, config, config.eval.test)
        (result.run_dir / "eval").mkdir(exist_ok=True)
        (result.run_dir / "eval" / "preference.json").write_text(json.dumps(figures, indent=1))
        result.comparison = figures
        say("preference results: " + json.dumps(figures))
        write_report(result.run_dir, None, preference=figures)
    else:
        write_report(result.run_dir, None)


def evaluate_classifier_run(run_dir: Path, test: str, settings: EvalConfig, *,
                            columns: dict[str, str] | None = None, share: Share = ALONE) -> Comparison:
    """Metrics of a run's classification head on `test`; writes eval/ and the report (rank 0 of `share`)."""
    config = run_config(run_dir)
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    items, _ = load_items(test, data, LabelTask.load(Path(run_dir) / "task.json"), config.task, max_rows=settings.max_rows)
    comparison = evaluate_classifier(load_classifier(str(run_dir), share), items, settings)
    if not share.writes:
        return comparison
    save_comparison(comparison, Path(run_dir) / "eval")
    markdown, html = write_report(run_dir, comparison)
    print(f"\n{comparison.table()}\n\nreport: {markdown} and {html}", flush=True)
    return comparison


def evaluate_span_run(run_dir: Path, test: str, settings: EvalConfig) -> SpanComparison:
    """A token-classify run's entities or an extractive-qa run's answers on `test`, beside the
    prompting baselines (settings.compare); writes eval/ and the report."""
    from tunesmith.data.qa import read_qa
    from tunesmith.data.spans import read_entity_file, read_entity_rows
    from tunesmith.eval import extraction
    from tunesmith.models.reader import load_reader, read_answers
    from tunesmith.models.tagger import find_entities, load_tagger

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    seed, shots = config.train.seed, settings.few_shot if config.data.train else 0
    loaded = None
    if settings.compare:
        model = prompting_model(config)
        say(f"baselines: {model} prompted zero-shot" + (f" and {shots}-shot" if shots else ""))
        loaded = load_for_generation(model, precision=settings.precision)
    if config.train.method == "token-classify":
        tagger = load_tagger(str(run_dir))
        types = sorted({tag[2:] for tag in tagger.tags if tag != "O"})
        rows = read_entity_file(resolve_data_path(test), set(types))[:settings.max_rows]
        (found, cut), seconds = extraction.timed(find_entities, tagger, [r.text for r in rows], batch_size=settings.batch_size)
        pool = [] if not shots else [row for row in read_entity_rows(resolve_data_path(config.data.train))[0]
                                     if {e.label for e in row.entities} <= set(types)]
        prompted = [] if loaded is None else [
            extraction.prompted_entities(loaded, f"base {k}-shot" if k else "base zero-shot", rows, pool, types, k, settings, seed)
            for k in dict.fromkeys([0, shots])]
        comparison = extraction.compare_entities(rows, (str(run_dir), found, seconds), prompted, settings, shots)
        if cut:
            comparison.notes.append(f"{cut} of {len(rows)} test texts are longer than the tagger reads "
                                    f"({tagger.max_length} tokens): their words past the cut count as untagged")
        keys, pool_keys = [r.text for r in rows], [r.text for r in pool]
    else:
        reader = load_reader(str(run_dir))
        rows = read_qa(resolve_data_path(test))[:settings.max_rows]
        found, seconds = extraction.timed(read_answers, reader, rows, batch_size=settings.batch_size)
        pool = read_qa(resolve_data_path(config.data.train)) if shots else []
        allow_none = reader.unanswerable or any(not row.answers for row in rows)
        prompted = [] if loaded is None else [
            extraction.prompted_answers(loaded, f"base {k}-shot" if k else "base zero-shot", rows, pool, allow_none, k, settings, seed)
            for k in dict.fromkeys([0, shots])]
        retrieval_note = None
        if settings.rag.corpus:  # the open setting: no context given, the k best chunks of the corpus instead
            from tunesmith.models.retrieval import index_corpus

            index = index_corpus(settings.rag.corpus, text_field=settings.rag.text_field, retriever=settings.rag.retriever)
            open_rows, recall = extraction.retrieved_contexts(rows, index, settings.rag.k)
            opened, open_seconds = extraction.timed(read_answers, reader, open_rows, batch_size=settings.batch_size)
            prompted.append(extraction.reader_system("fine-tuned + retrieval", str(run_dir), open_rows, opened, open_seconds))
            if loaded is not None:
                prompted.append(extraction.prompted_answers(loaded, "base + RAG", open_rows, [], allow_none, 0, settings, seed))
            retrieval_note = (f"+ retrieval and + RAG read the {settings.rag.k} best chunks of {settings.rag.corpus} "
                              f"({settings.rag.retriever}) for the question alone, not the given context"
                              + (f"; recall@{settings.rag.k} of the source document {recall:.3f}" if recall is not None else ""))
        comparison = extraction.compare_answers(rows, (str(run_dir), found, seconds), prompted, settings, shots)
        if retrieval_note:
            comparison.notes.append(retrieval_note)
            scores = {system.name: values for system, values in prompted}
            if "base + RAG" in scores:
                from tunesmith.eval.intervals import mean_gain_interval

                # A question unanswerable from its given context may be answered by another document of
                # the corpus, so its gold "no answer" does not hold in the open setting: the gain is
                # measured on the answerable questions alone.
                answerable = [i for i, row in enumerate(rows) if row.answers]
                base_f1 = [scores["base + RAG"]["f1"][i] for i in answerable]
                tuned_f1 = [scores["fine-tuned + retrieval"]["f1"][i] for i in answerable]
                gain = mean_gain_interval(base_f1, tuned_f1, resamples=settings.resamples)
                comparison.notes.append(
                    f"the open setting's rows above count the {len(rows) - len(answerable)} questions unanswerable "
                    f"from their given context as unanswerable, though a retrieved document may answer them; on the "
                    f"{len(answerable)} answerable ones F1 is {sum(tuned_f1) / max(len(answerable), 1):.3f} "
                    f"(fine-tuned + retrieval) and {sum(base_f1) / max(len(answerable), 1):.3f} (base + RAG)")
                comparison.notes.append(gain.verdict(f"on the {len(answerable)} answerable questions without their "
                                                     "context, the F1 gain of fine-tuned + retrieval over base + RAG"))
        keys, pool_keys = [f"{r.question} {r.context}" for r in rows], [f"{r.question} {r.context}" for r in pool]
    seen = {normalize(key) for key in pool_keys}
    leaked = sum(normalize(key) in seen for key in keys)
    if leaked:
        comparison.notes.append(f"{leaked} of {len(rows)} test rows also appear in the training data: the scores "
                                "overstate how well the model does on new inputs")
    extraction.save_span_comparison(comparison, run_dir / "eval")
    markdown, html = write_report(run_dir, None, spans=comparison)
    print(f"\n{comparison.table()}\n", flush=True)
    for line in comparison.interval_lines():
        print(f"95% interval: {line}")
    for note in comparison.notes:
        print(f"note: {note}")
    print(f"report: {markdown} and {html}")
    return comparison


def prompting_model(config: RunConfig) -> str:
    """eval.prompt_model, else the run's base model when it generates text, else the catalog's causal LM."""
    from tunesmith.models.load import resolve_model

    if config.eval.prompt_model:
        return config.eval.prompt_model
    source = resolve_model(config.model.name)
    if source.kind == "hub":
        return config.model.name
    settings = Path(source.location) / "config.json"
    architectures = json.loads(settings.read_text()).get("architectures") or [] if settings.is_file() else []
    return config.model.name if any(a.endswith("ForCausalLM") for a in architectures) else "smollm2-135m-instruct"


def pretrain_perplexity(result: RunResult, settings: EvalConfig) -> dict:
    """Perplexity before and after continued pretraining, on held-out domain text and on general text."""
    figures: dict = {}
    if result.baseline_val_loss is not None and result.val_loss is not None:
        figures["domain"] = {"before": perplexity(result.baseline_val_loss), "after": perplexity(result.val_loss)}
    if settings.general_text:
        forgetting = general_text_forgetting(result.run_dir, settings)
        figures["general"] = {"before": forgetting["ppl_before"], "after": forgetting["ppl_after"],
                              "source": forgetting["source"], "documents": forgetting["documents"]}
    (result.run_dir / "eval").mkdir(exist_ok=True)
    (result.run_dir / "eval" / "perplexity.json").write_text(json.dumps(figures, indent=1))
    for name, values in figures.items():
        say(f"{name} perplexity: {values['before']:.2f} before, {values['after']:.2f} after")
    return figures


def evaluate_run(run_dir: Path, test: str, settings: EvalConfig, *, columns: dict[str, str] | None = None,
                 share: Share = ALONE) -> Comparison:
    """Compare base zero-shot / base few-shot / fine-tuned on `test`; writes eval/ and report.md/.html
    (rank 0 of `share`, whose processes share out the decoding)."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    task = LabelTask.load(run_dir / "task.json")
    items, task = load_items(test, data, task, config.task, max_rows=settings.max_rows)
    labels = list(task.labels) if task else None
    pool: list[EvalItem] = []
    if settings.compare and (settings.few_shot or settings.rag.corpus == "train"):
        pool, _ = load_items(config.data.train, config.data, task, config.task, skip_invalid=True)
    if settings.compare:
        comparison = run_comparison(run_dir, items, pool, settings, labels, seed=config.train.seed, say=say, share=share)
    else:
        loaded = load_for_generation(str(run_dir), precision=settings.precision, share=share)
        comparison = Comparison("label" if labels else "generation", items,
                                [evaluate_system(loaded, "fine-tuned", [i.prompt for i in items], items, labels, settings)], labels)
    if not share.writes:
        return comparison
    comparison.notes.extend(leakage_notes(items, pool))
    if settings.groups and labels:
        comparison.notes.extend(group_notes(comparison, settings.groups))
    save_comparison(comparison, run_dir / "eval")
    markdown, html = write_report(run_dir, comparison)
    print(f"\n{comparison.table()}\n", flush=True)
    for line in comparison.interval_lines():
        print(f"95% interval: {line}")
    for note in comparison.notes:
        print(f"note: {note}")
    print(f"report: {markdown} and {html}")
    return comparison


def select_base_model(models: list[str], test: str, settings: EvalConfig, *, shots_from: str | None = None,
                      columns: dict[str, str] | None = None) -> Comparison:
    """Candidate base models on the same rows, before any training: each zero-shot and, with
    `shots_from` (solved rows to draw examples from), k-shot; one table with 95% intervals."""
    import gc

    from tunesmith.config import DataConfig, TaskConfig
    from tunesmith.eval.compare import add_intervals
    from tunesmith.eval.fewshot import TfidfIndex, few_shot_prompt, select_shots

    if len(set(models)) != len(models) or not models:
        raise RunError(f"--model {' '.join(models) or '(none)'}: name each candidate model once")
    data = DataConfig(columns=dict(columns or {}))
    items, task = load_items(test, data, None, TaskConfig(), max_rows=settings.max_rows)
    labels = list(task.labels) if task else None
    pool: list[EvalItem] = []
    if shots_from and settings.few_shot:
        pool, _ = load_items(shots_from, data, task, TaskConfig(), skip_invalid=True)
        pool = [p for p in pool if normalize(p.key) not in {normalize(i.key) for i in items}]
    comparison = Comparison("label" if labels else "generation", items, [], labels, settings.few_shot if pool else 0,
                            settings.few_shot_selection, tuned=None)
    zero_shot = [item.prompt for item in items]
    index = TfidfIndex([p.key for p in pool]) if pool and settings.few_shot_selection == "similar" else None
    shots = [few_shot_prompt(item, select_shots(item, n, pool, settings.few_shot, settings.few_shot_selection, 0, index))
             for n, item in enumerate(items)] if pool else []
    for model in models:
        loaded = load_for_generation(model, precision=settings.precision)
        name = Path(model).name if Path(model).exists() else model
        say(f"evaluating {name} zero-shot on {len(items)} rows")
        comparison.systems.append(evaluate_system(loaded, f"{name} zero-shot", zero_shot, items, labels, settings))
        if shots:
            say(f"evaluating {name} {settings.few_shot}-shot on {len(items)} rows")
            comparison.systems.append(evaluate_system(loaded, f"{name} {settings.few_shot}-shot", shots, items, labels,
                                                      settings, with_perplexity=False))
        del loaded
        gc.collect()
    add_intervals(comparison, settings.resamples)
    print(f"\n{comparison.table()}\n", flush=True)
    for line in comparison.interval_lines():
        print(f"95% interval: {line}")
    return comparison


def evaluate_model(target: str, test: str, settings: EvalConfig, *, columns: dict[str, str] | None = None) -> SystemResult:
    """Metrics of one model (a run folder or any model name) on `test`, zero-shot."""
    path = Path(target)
    config = run_config(path) if (path / "config.yaml").is_file() else RunConfig()
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    task = LabelTask.load(path / "task.json") if path.is_dir() else None
    items, task = load_items(test, data, task, config.task, max_rows=settings.max_rows)
    loaded = load_for_generation(target, precision=settings.precision)
    result = evaluate_system(loaded, Path(target).name, [i.prompt for i in items], items,
                             list(task.labels) if task else None, settings)
    return result


def group_notes(comparison: Comparison, groups_file: str) -> list[str]:
    """eval.groups: each system's accuracy and macro F1 per group of rows, and the gaps between groups."""
    from tunesmith.data.audit.slices import load_groups, rows_by_group
    from tunesmith.eval.metrics import metrics_by_group

    members = rows_by_group([item.key for item in comparison.items], load_groups(groups_file))
    gold = [item.label for item in comparison.items]
    notes = []
    for system in comparison.systems:
        found = metrics_by_group(members, gold, system.predicted, comparison.labels)
        parts = [f"{name} accuracy {g['accuracy']:.3f}, macro F1 {g['macro_f1']:.3f} (n={g['rows']})"
                 for name, g in found["groups"].items() if g["rows"]]
        parts += [f"{name} no rows" for name, g in found["groups"].items() if not g["rows"]]
        gap = found["gap"]
        gap_text = f"; gap {gap['accuracy']:.3f} in accuracy, {gap['macro_f1']:.3f} in macro F1" if gap else ""
        notes.append(f"by group ({groups_file}; macro F1 over the labels present in the group's rows), {system.name}: "
                     f"{'; '.join(parts)}{gap_text}")
    return notes


def audit_before_training(config: RunConfig) -> None:
    """data.audit: the audit's summary before any model loads; with `strict`, a DataError on any finding."""
    if config.data.audit == "off" or not config.data.train:
        return
    if config.train.method in ("token-classify", "extractive-qa"):
        say(f"data audit: not run for {config.train.method} rows (the audit reads rows of text, labels and chats); "
            "the entity and answer checks run as the data loads")
        return
    from tunesmith.data.audit import run_audit

    train = resolve_data_path(config.data.train)
    held_out = [path for path in (resolve_data_path(s) for s in (config.data.validation, config.eval.test) if s)
                if path.exists()]
    if not train.exists():  # the run's own checks name it, after the model (same order as without the audit)
        return
    report = run_audit(train, config.data, held_out)
    for line in report.summary_lines(examples=2):
        say(line)
    if config.data.audit == "strict" and not report.clean:
        raise DataError(f"{config.data.train}: the data audit found problems and data.audit=strict; fix them (tunesmith "
                        "data audit --dedupe/--scrub -o writes a cleaned copy) or set data.audit=warn:",
                        [Problem(f.where, f.what, f.fix) for f in report.findings]
                        + [Problem(g.rows[0], f"duplicated at {', '.join(g.rows[1:])}", "--dedupe") for g in report.duplicates]
                        + [Problem(leak.held_out, f"also in the training data at {leak.train} ({leak.kind})",
                                   "remove it from one of the two files") for leak in report.leaks]
                        + [Problem(where, f"holds {kind}", "--scrub") for kind, wheres in report.pii.items() for where in wheres])


def leakage_notes(items: list[EvalItem], pool: list[EvalItem]) -> list[str]:
    """The data audit's leakage check on the evaluated rows: exact, near and long shared answer runs."""
    from tunesmith.data.audit.duplicates import find_leaks

    leaks = find_leaks([p.where for p in pool], [p.key for p in pool], [i.where for i in items], [i.key for i in items],
                       [p.reference for p in pool], [i.reference for i in items])
    if not leaks:
        return []
    kinds = ", ".join(f"{sum(leak.kind == kind for leak in leaks)} {kind}" for kind in ("exact", "near", "ngram")
                      if any(leak.kind == kind for leak in leaks))
    return [f"{len(leaks)} of {len(items)} test rows also appear in the training data ({kinds}; e.g. {leaks[0].held_out} ~ "
            f"{leaks[0].train}): the scores overstate how well the model does on new inputs; remove them from one of "
            "the two files (tunesmith data audit TRAIN --test TEST lists them all)"]


def run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.yaml); give the folder `tunesmith train` wrote")
    return load_config(path)


def predict(target: str, data_spec: str, output: Path | None = None, *, columns: dict[str, str] | None = None,
            batch_size: int = 16) -> Path:
    """Predictions of a run's model for every row of `data_spec`, written as JSONL (or CSV).

    A classification run gives each row's label and the probability of every label; a generative
    run gives its answer (and, for a label task, the label the answer maps to), asked exactly as
    training and evaluation ask (data/prompting.py), with evaluation's answer length."""
    from tunesmith.eval.classifier import predict_probabilities
    from tunesmith.eval.metrics import map_answer_to_label
    from tunesmith.models.generate import generate

    path = Path(target)
    config = run_config(path) if (path / "config.yaml").is_file() else RunConfig()
    manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else {}
    if manifest.get("method") in ("token-classify", "extractive-qa"):
        source = resolve_data_path(data_spec)
        rows = predict_spans(path, manifest["method"], source, config.data, columns, batch_size)
        output = output or path / "predictions" / f"{source.stem}.jsonl"
        write_predictions(output, rows)
        return output
    source, examples = rows_to_predict(data_spec, config.data, columns)
    rows: list[dict] = []
    if manifest.get("method") == "classify":
        texts = texts_to_classify(source, examples)
        classifier = load_classifier(str(path))
        probabilities = predict_probabilities(classifier, texts, batch_size=batch_size)
        for example, text, row in zip(examples, texts, probabilities):
            rows.append({"where": example.where, "text": text, "label": classifier.labels[int(row.argmax())],
                         **{f"p({label})": round(float(p), 6) for label, p in zip(classifier.labels, row)}})
    else:
        task = LabelTask.load(path / "task.json")
        asked = prompts_to_predict(source, examples, config.data, task)
        loaded = load_for_generation(target, precision="fp32")
        budget = answer_budget(loaded.tokenizer, task.labels if task else None, config.eval.max_new_tokens)
        answers = generate(loaded, [row.messages for row in asked], batch_size=batch_size, max_new_tokens=budget,
                           stop_at_newline=task is not None).texts
        for row, answer in zip(asked, answers):
            rows.append({"where": row.where, "answer": answer,
                         **({"label": map_answer_to_label(answer, task.labels)[0]} if task is not None else {})})
    output = output or (path if path.is_dir() else Path(".")) / "predictions" / f"{Path(source).stem}.jsonl"
    write_predictions(output, rows)
    return output


def predict_spans(run_dir: Path, method: str, source: Path, data: DataConfig, columns: dict[str, str] | None,
                  batch_size: int) -> list[dict]:
    """token-classify: each text's entities with their types, offsets and scores (texts from a CoNLL
    file or rows with a text); extractive-qa: each question's answer in its context, its offset and score."""
    if method == "extractive-qa":
        from tunesmith.data.qa import read_qa
        from tunesmith.models.reader import load_reader, read_answers

        rows = read_qa(source)
        answers = read_answers(load_reader(str(run_dir)), rows, batch_size=batch_size)
        return [{"where": row.where, "id": row.id, "question": row.question, **answer.as_dict()}
                for row, answer in zip(rows, answers)]
    from tunesmith.data.spans import TAG_FILES, read_entity_rows
    from tunesmith.models.tagger import find_entities, load_tagger

    if source.suffix.lower() in TAG_FILES:
        wheres, texts = zip(*[(row.where, row.text) for row in read_entity_rows(source)[0]]) if source.stat().st_size else ((), ())
    else:
        _, examples = rows_to_predict(str(source), data, columns)
        wheres, texts = [e.where for e in examples], texts_to_classify(source, examples)
    tagger = load_tagger(str(run_dir))
    found, cut = find_entities(tagger, list(texts), batch_size=batch_size)
    if cut:
        say(f"{cut} texts are longer than the tagger reads ({tagger.max_length} tokens): their words past the cut are untagged")
    return [{"where": where, "text": text, "entities": [entity.as_dict() for entity in entities]}
            for where, text, entities in zip(wheres, texts, found)]


def rows_to_predict(data_spec: str, data: DataConfig, columns: dict[str, str] | None = None) -> tuple[Path, list[Example]]:
    """The rows of `data_spec`, read with the run's column names (and `columns` over them), but
    no label column: rows to predict have none."""
    from tunesmith.data.catalog import resolve_data_path
    from tunesmith.data.pipeline import read_source

    mapping = {key: value for key, value in {**data.columns, **(columns or {})}.items() if key != "label"}
    source = resolve_data_path(data_spec)
    raw = read_source(source, replace(data, columns=mapping, format="text" if data.format == "label" else data.format))
    if raw.problems:
        raise DataError(f"{source}: {len({p.where for p in raw.problems})} of {raw.rows} rows cannot be predicted (if the "
                        f"text is in another column, name it with --text-column NAME{_mapped(mapping)}):", raw.problems)
    return source, raw.examples


def prompts_to_predict(source: Path, examples: list[Example], data: DataConfig, task: LabelTask | None) -> list[PromptedRow]:
    """What the run's model is asked for each row: the prompt training built for such a row."""
    asked, problems = prompt_rows(examples, data.system_prompt, task)
    if problems:
        raise DataError(f"{source}: {len(problems)} rows cannot be predicted:", problems)
    return asked


def texts_to_classify(source: Path, examples: list[Example]) -> list[str]:
    """The text of every row, for a classification head: rows must be texts (a label column is ignored)."""
    problems = [Problem(e.where, f"a {e.kind} row has no single text for the classifier",
                        "give rows with a text column (name it with --text-column NAME)")
                for e in examples if e.kind not in ("text", "label")]
    if problems:
        raise DataError(f"{source}: {len(problems)} rows cannot be classified:", problems)
    return [e.text for e in examples]


def write_predictions(output: Path, rows: list[dict]) -> None:
    """JSONL, or CSV when `output` ends in .csv (its columns: every key of any row, in order)."""
    import csv

    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".csv":
        with open(output, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
            writer.writeheader()
            writer.writerows(rows)
    else:
        output.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _mapped(mapping: dict[str, str]) -> str:
    """The columns read now (the run's own, unless told otherwise)."""
    return "".join(f"; reading {field} from column '{column}'" for field, column in mapping.items())
