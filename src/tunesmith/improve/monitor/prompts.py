"""The two sides drift compares: the prompts a run was trained on, read from its folder exactly as
training asked them, and the prompts it has been asked since, read from the store."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.pipeline import read_source
from tunesmith.data.prompting import prompt_rows
from tunesmith.data.tasks import LabelTask, check_labels
from tunesmith.errors import RunError
from tunesmith.improve.monitor.drift import words
from tunesmith.store.tables import CompletionRow


@dataclass(frozen=True)
class TrainingPrompts:
    """The last user message of every training row (label rows through the task's template, as the
    model saw them), with the row's label for a label task."""

    texts: list[str]
    labels: list[str | None]
    task: LabelTask | None
    files: list[str]
    unusable_rows: int  # rows that are no prompt (raw text for pretraining, invalid rows)


def training_prompts(run_dir: Path) -> TrainingPrompts:
    """Every data file the run's manifest lists (training, then validation), read with the run's settings."""
    from tunesmith.pipeline.folder import run_config

    run_dir = Path(run_dir)
    config = run_config(run_dir)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise RunError(f"{run_dir}: no manifest.json, so the training data is unknown; monitor a finished run folder "
                       "(or give the model as a base model: traffic only)")
    listed = json.loads(manifest_path.read_text()).get("data", {}).get("files")
    if not listed:
        raise RunError(f"{manifest_path}: lists no training data files, so drift has nothing to compare with; "
                       "monitor a run folder `tunesmith train` wrote")
    files = [Path(entry["path"]) for entry in listed]
    task = LabelTask.load(run_dir / "task.json")
    texts: list[str] = []
    labels: list[str | None] = []
    unusable = 0
    for path in files:
        if not path.exists():
            raise RunError(f"{path}: the training data of {run_dir} is gone; drift compares live prompts with it, "
                           "so put the file back where the run read it")
        raw = read_source(path, config.data)
        examples, problems = check_labels(raw.examples, task)
        rows, unaskable = prompt_rows(examples, config.data.system_prompt, task)
        unusable += len({p.where for p in raw.problems + problems + unaskable})
        for row in rows:
            asked = last_user_text(m.as_dict() for m in row.messages)
            if asked is not None:
                texts.append(asked)
                labels.append(row.label)
    return TrainingPrompts(texts, labels, task, [str(path) for path in files], unusable)


def last_user_text(messages: Iterable[dict]) -> str | None:
    """The text of the last user turn (text parts joined when the content is a list of parts)."""
    text = None
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            text = content if isinstance(content, str) else None
    return text


def live_rows(rows: list[CompletionRow]) -> list[CompletionRow]:
    """The answered chat completions with a user turn: what drift reads. Failed requests say nothing
    about the answers, and /v1/completions prompts are raw text (often with a chat template written
    into them), not the user turns training learned from."""
    return [row for row in rows if row.error is None and row.endpoint == "chat"
            and last_user_text(row.messages or []) is not None]


def run_tokenizer(run_dir: Path) -> tuple[Any | None, str]:
    """The run's own tokenizer (adapter/, model/ or the folder itself), or None and why not."""
    from transformers import AutoTokenizer

    for folder in (run_dir / "adapter", run_dir / "model", run_dir):
        if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
            try:
                return AutoTokenizer.from_pretrained(folder), f"tokens of {folder}"
            except (OSError, ValueError) as error:
                return None, f"words: the tokenizer in {folder} does not load ({error})"
    return None, f"words: {run_dir} holds no tokenizer (adapter/, model/ or the folder itself)"


def lengths(texts: list[str], tokenizer: Any | None) -> list[int]:
    """Prompt lengths in the run's tokens (no special tokens), or in words without a tokenizer."""
    if not texts:
        return []
    if tokenizer is None:
        return [len(words(text)) for text in texts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
