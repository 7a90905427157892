"""`tunesmith predict`: a run's model on every row of a file, asked exactly as training and
evaluation ask; the rows and their answers (or labels, entities, spans) written as JSONL or CSV."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.config import DataConfig, RunConfig, replace
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Example, Problem
from tunesmith.data.prompting import PromptedRow, prompt_rows
from tunesmith.data.tasks import LabelTask
from tunesmith.errors import DataError
from tunesmith.eval.classifier import load_classifier
from tunesmith.eval.compare import answer_budget
from tunesmith.models.generate import load_for_generation
from tunesmith.pipeline.folder import run_config
from tunesmith.training.session import say


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
