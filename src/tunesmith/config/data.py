"""data: where the examples come from and how they become token ids; rag: retrieved text in prompts."""

from __future__ import annotations

from typing import Literal

from tunesmith.config.base import Section, setting


class RagConfig(Section):
    """Retrieved text in the prompt: for the RAG baselines (eval.rag) and for retrieval-aware training (data.rag)."""

    corpus: str | None = setting(
        None,
        "What to retrieve from: `train` (the training rows themselves, k nearest as solved examples), a folder "
        "of .txt/.md documents, a .jsonl/.csv file with a text field, or a named corpus such as "
        "invented-facts:documents. Unset: no RAG systems.",
    )
    k: int = setting(3, "Chunks put in each prompt.", ge=1)
    retriever: Literal["bm25", "dense"] = setting(
        "bm25", "bm25 (word overlap, no weights) or dense (embeddings from the catalog's all-minilm-l6-v2)."
    )
    text_field: str = setting("text", "Field holding each document's text in a .jsonl/.csv corpus.")


class DataConfig(Section):
    """Where the examples come from and how they become token ids."""

    train: str | None = setting(
        None,
        "Training data: a .jsonl/.json/.csv/.tsv/.parquet file, a folder of .txt/.md files, or a "
        "named dataset (`tunesmith data list`).",
    )
    validation: str | None = setting(
        None, "Validation data file (same formats as `train`). Overrides `validation_split`."
    )
    validation_split: float = setting(
        0.1, "Fraction of the training rows held out for validation when no file is given (0: none).", job=True,
        ge=0.0, lt=1.0,
    )
    format: Literal["auto", "chat", "alpaca", "sharegpt", "prompt_completion", "label", "text"] = setting(
        "auto",
        "Row format; auto detects it from the fields: `messages` (chat), `instruction`/`output` "
        "(alpaca), `conversations` (sharegpt), `prompt`/`completion`, `text`+`label`, `text`.", job=True,
    )
    columns: dict[str, str] = setting(
        {},
        "Map the fields tunesmith expects to your column names, e.g. {prompt: question, "
        "completion: answer}.", job=True,
    )
    max_length: int = setting(1024, "Longest example in tokens, template included.", job=True, ge=8)
    truncate: bool = setting(
        False, "Cut examples longer than `max_length` instead of reporting them as errors.", job=True
    )
    stride: int = setting(
        128,
        "train.method=extractive-qa: tokens that consecutive windows of a context longer than `max_length` share, "
        "so that an answer cut by one window's edge lies whole in the next.", job=True, ge=0,
    )
    skip_invalid: bool = setting(
        False, "Leave out invalid rows (their count and reasons are printed) instead of stopping.", job=True
    )
    audit: Literal["warn", "strict", "off"] = setting(
        "warn",
        "The data audit before training (duplicates, leakage into validation/test rows, personal data, "
        "suspicious rows; `tunesmith data audit` shows it whole): warn prints its summary, strict stops on any "
        "finding, off skips it.", job=True,
    )
    loss_on: Literal["assistant", "all"] = setting(
        "assistant",
        "Which tokens the loss covers: the assistant's replies (and their end-of-turn token) or "
        "every token. Plain text rows always train on every token.", job=True,
    )
    system_prompt: str | None = setting(
        None, "System message added to conversations that have none (none added if unset).", job=True
    )
    rag: RagConfig = setting(
        RagConfig(),
        "Retrieval-aware training: each training prompt gets the k best chunks of `corpus` before its last "
        "user turn, exactly as the RAG systems of the evaluation put them, so the model learns to answer from "
        "documents (set eval.rag to the same corpus to evaluate it that way). A document corpus only.",
    )
