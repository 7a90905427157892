"""The evaluation of a span run: a token-classify run's entities or an extractive-qa run's answers
on held-out rows, beside the base model prompted for the same spans; writes eval/ and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.config import EvalConfig, RunConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.eval import extraction
from tunesmith.eval.extraction import SpanComparison
from tunesmith.eval.items import subset
from tunesmith.eval.metrics import normalize
from tunesmith.eval.report import print_comparison, write_report
from tunesmith.models.generate import load_for_generation
from tunesmith.pipeline.folder import run_config
from tunesmith.training.session import say


def evaluate_span_run(run_dir: Path, test: str, settings: EvalConfig) -> SpanComparison:
    """A token-classify run's entities or an extractive-qa run's answers on `test`, beside the
    prompting baselines (settings.compare); writes eval/ and the report."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    shots = settings.few_shot if config.data.train else 0
    loaded = None
    if settings.compare:
        model = prompting_model(config)
        say(f"baselines: {model} prompted zero-shot" + (f" and {shots}-shot" if shots else ""))
        loaded = load_for_generation(model, precision=settings.precision)
    compare = compare_entities if config.train.method == "token-classify" else compare_answers
    comparison, keys, pool_keys = compare(run_dir, test, config, settings, loaded, shots)
    seen = {normalize(key) for key in pool_keys}
    leaked = sum(normalize(key) in seen for key in keys)
    if leaked:
        comparison.notes.append(f"{leaked} of {len(keys)} test rows also appear in the training data: the scores "
                                "overstate how well the model does on new inputs")
    extraction.save_span_comparison(comparison, run_dir / "eval")
    print_comparison(comparison, *write_report(run_dir, None, spans=comparison))
    return comparison


def compare_entities(run_dir: Path, test: str, config: RunConfig, settings: EvalConfig, loaded: Any,
                     shots: int) -> tuple[SpanComparison, list[str], list[str]]:
    """A token-classify run's entities on `test` beside the `loaded` base model prompted for them;
    with the texts compared and those of the training rows the few-shot examples come from."""
    from tunesmith.data.spans import read_entity_file, read_entity_rows
    from tunesmith.models.tagger import find_entities, load_tagger

    tagger = load_tagger(str(run_dir))
    types = sorted({tag[2:] for tag in tagger.tags if tag != "O"})
    rows = subset(read_entity_file(resolve_data_path(test), set(types)), settings.max_rows)
    (found, cut), seconds = extraction.timed(find_entities, tagger, [r.text for r in rows], batch_size=settings.batch_size)
    pool = [] if not shots else [row for row in read_entity_rows(resolve_data_path(config.data.train))[0]
                                 if {e.label for e in row.entities} <= set(types)]
    seed = config.train.seed
    prompted = [] if loaded is None else [
        extraction.prompted_entities(loaded, f"base {k}-shot" if k else "base zero-shot", rows, pool, types, k, settings, seed)
        for k in dict.fromkeys([0, shots])]
    comparison = extraction.compare_entities(rows, (str(run_dir), found, seconds), prompted, settings, shots)
    if cut:
        comparison.notes.append(f"{cut} of {len(rows)} test texts are longer than the tagger reads "
                                f"({tagger.max_length} tokens): their words past the cut count as untagged")
    return comparison, [r.text for r in rows], [r.text for r in pool]


def compare_answers(run_dir: Path, test: str, config: RunConfig, settings: EvalConfig, loaded: Any,
                    shots: int) -> tuple[SpanComparison, list[str], list[str]]:
    """An extractive-qa run's answers on `test` beside the `loaded` base model prompted for them (and,
    with eval.rag.corpus, both reading retrieved chunks instead of the given context); with the rows
    compared and those of the training rows the few-shot examples come from."""
    from tunesmith.data.qa import read_qa
    from tunesmith.models.reader import load_reader, read_answers

    reader = load_reader(str(run_dir))
    rows = subset(read_qa(resolve_data_path(test)), settings.max_rows)
    found, seconds = extraction.timed(read_answers, reader, rows, batch_size=settings.batch_size)
    pool = read_qa(resolve_data_path(config.data.train)) if shots else []
    allow_none = reader.unanswerable or any(not row.answers for row in rows)
    seed = config.train.seed
    prompted = [] if loaded is None else [
        extraction.prompted_answers(loaded, f"base {k}-shot" if k else "base zero-shot", rows, pool, allow_none, k, settings, seed)
        for k in dict.fromkeys([0, shots])]
    retrieval_note = None
    if settings.rag.corpus:  # the open setting: no context given, the k best chunks of the corpus instead
        opened, retrieval_note = answers_from_corpus(run_dir, reader, rows, loaded, allow_none, settings, seed)
        prompted.extend(opened)
    comparison = extraction.compare_answers(rows, (str(run_dir), found, seconds), prompted, settings, shots)
    if retrieval_note:
        comparison.notes.append(retrieval_note)
        comparison.notes.extend(answerable_gain_notes(rows, prompted, settings))
    return comparison, [f"{r.question} {r.context}" for r in rows], [f"{r.question} {r.context}" for r in pool]


def answers_from_corpus(run_dir: Path, reader: Any, rows: list, loaded: Any, allow_none: bool, settings: EvalConfig,
                        seed: int) -> tuple[list, str]:
    """The open setting: the run's reader (and the `loaded` base model, prompted) given the
    eval.rag.k best chunks of eval.rag.corpus for each question instead of its context; their
    systems, and the note that says so."""
    from tunesmith.models.reader import read_answers
    from tunesmith.models.retrieval import index_corpus

    index = index_corpus(settings.rag.corpus, text_field=settings.rag.text_field, retriever=settings.rag.retriever)
    open_rows, recall = extraction.retrieved_contexts(rows, index, settings.rag.k)
    opened, open_seconds = extraction.timed(read_answers, reader, open_rows, batch_size=settings.batch_size)
    systems = [extraction.reader_system("fine-tuned + retrieval", str(run_dir), open_rows, opened, open_seconds)]
    if loaded is not None:
        systems.append(extraction.prompted_answers(loaded, "base + RAG", open_rows, [], allow_none, 0, settings, seed))
    note = (f"+ retrieval and + RAG read the {settings.rag.k} best chunks of {settings.rag.corpus} "
            f"({settings.rag.retriever}) for the question alone, not the given context"
            + (f"; recall@{settings.rag.k} of the source document {recall:.3f}" if recall is not None else ""))
    return systems, note


def answerable_gain_notes(rows: list, prompted: list, settings: EvalConfig) -> list[str]:
    """The F1 gain of fine-tuned + retrieval over base + RAG, on the answerable questions alone."""
    scores = {system.name: values for system, values in prompted}
    if "base + RAG" not in scores:
        return []
    from tunesmith.eval.intervals import mean_gain_interval

    # A question unanswerable from its given context may be answered by another document of
    # the corpus, so its gold "no answer" does not hold in the open setting: the gain is
    # measured on the answerable questions alone.
    answerable = [i for i, row in enumerate(rows) if row.answers]
    base_f1 = [scores["base + RAG"]["f1"][i] for i in answerable]
    tuned_f1 = [scores["fine-tuned + retrieval"]["f1"][i] for i in answerable]
    gain = mean_gain_interval(base_f1, tuned_f1, resamples=settings.resamples)
    return [f"the open setting's rows above count the {len(rows) - len(answerable)} questions unanswerable "
            f"from their given context as unanswerable, though a retrieved document may answer them; on the "
            f"{len(answerable)} answerable ones F1 is {sum(tuned_f1) / max(len(answerable), 1):.3f} "
            f"(fine-tuned + retrieval) and {sum(base_f1) / max(len(answerable), 1):.3f} (base + RAG)",
            gain.verdict(f"on the {len(answerable)} answerable questions without their "
                         "context, the F1 gain of fine-tuned + retrieval over base + RAG")]


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

