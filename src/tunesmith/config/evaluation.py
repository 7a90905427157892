"""eval: held-out evaluation after training, against the base model zero-shot, few-shot and with RAG."""

from __future__ import annotations

from typing import Literal

from tunesmith.config.base import Section, setting
from tunesmith.config.data import RagConfig


class EvalConfig(Section):
    """Held-out evaluation after training, against the base model zero-shot and few-shot."""

    test: str | None = setting(
        None,
        "Test data evaluated after training: a file or a named split such as movie-review-polarity:test. "
        "Unset: no evaluation after training (`tunesmith eval` / `compare` still work).",
    )
    compare: bool = setting(
        True, "Also run the base model zero-shot and few-shot on the same rows, and write report.md/.html.", job=True
    )
    few_shot: int = setting(5, "Solved training examples in the few-shot prompt (0: no few-shot baseline).",
                            job=True, ge=0)
    prompt_model: str | None = setting(
        None,
        "token-classify and extractive-qa runs: the causal LM prompted zero- and few-shot for the same entities or "
        "answers as the baseline. Unset: the run's base model when it generates text, else smollm2-135m-instruct.",
    )
    few_shot_selection: Literal["random", "similar", "fixed"] = setting(
        "random",
        "How shots are chosen (balanced over classes for label tasks): at random (seeded per row), the most "
        "similar inputs (TF-IDF), or fixed (one seeded draw shown to every row; likelihood scoring then runs "
        "the block of shots once, several times faster).", job=True,
    )
    max_rows: int | None = setting(
        None, "Evaluate at most this many test rows (unset: all): a seeded sample in file order, not the first rows "
        "(rows sorted by label would otherwise give one label only).", job=True, ge=1,
    )
    max_new_tokens: int = setting(
        256, "Longest generated answer for free-text tasks; label tasks get 32 tokens (or the longest label + 8) "
        "and stop at the end of the first line.", job=True, ge=1,
    )
    batch_size: int = setting(16, "Prompts decoded together (left-padded).", job=True, ge=1)
    precision: Literal["fp32", "auto", "bf16"] = setting(
        "fp32",
        "Precision of evaluation decoding. fp32: an answer never depends on which prompts share its batch. "
        "bf16 (auto, where native) decodes about 1.8x faster, but greedy answers can change with the batch "
        "(14 of 32 Alpaca answers did on SmolLM2-135M).", job=True,
    )
    general_text: str | None = setting(
        "c4-demo",
        "General text whose perplexity before and after shows what the model forgot (unset: skip). A fine-tuning "
        "job may name only a named dataset here.", job=True,
    )
    general_rows: int = setting(32, "Documents of `general_text` used, each cut to 256 tokens.", job=True, ge=1)
    scoring: Literal["both", "generate", "likelihood"] = setting(
        "both",
        "Label tasks: score every system by its generated answer, by the likelihood of each label after the prompt "
        "(rank classification: what the model knows, whatever its answer format), or both. likelihood is the fast "
        "one: every system is scored by likelihood; the fine-tuned model also generates every answer and each "
        "baseline `generate_sample` of them, and the table shows how often the generated answer is the most "
        "likely label.", job=True,
    )
    generate_sample: int = setting(
        50, "scoring=likelihood: rows (a seeded sample) whose answers each baseline also generates.", job=True, ge=0,
    )
    length_normalized: bool = setting(
        False, "Likelihood scoring: compare labels by mean log-probability per token instead of the sum.", job=True
    )
    rag: RagConfig = setting(RagConfig(), "Retrieval-augmented baselines.")
    rag_systems: Literal["both", "base"] = setting(
        "both", "With rag.corpus: retrieval before the base model's prompts and the fine-tuned model's (both), or "
        "before the base model's only.", job=True,
    )
    groups: str | None = setting(
        None,
        "A YAML of group name -> terms (e.g. gendered words): label tasks also get each system's accuracy per "
        "group of test rows mentioning its terms, and the gap between groups.",
    )
    compare_runs: list[str] = setting(
        [], "grpo runs: other run folders (or names under output.dir) whose models answer the same held-out "
        "prompts in the graded comparison, e.g. an SFT run on the same prompts; each becomes a row of the table.",
    )
    resamples: int = setting(
        2000, "Bootstrap resamples for the 95% intervals on every score and every gain (paired over rows).",
        job=True, ge=100,
    )
