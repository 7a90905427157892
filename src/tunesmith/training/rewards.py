"""Reward signals for on-policy preference tuning, named in `preference.reward`.

    concise                  built in: answers of at most 25 words score 1, falling to 0 at 50 words
    my_rewards.py:score      a Python function in a file, called as score(prompt, completion) -> float
    my_package.rewards:score the same, from an importable module
    classifier:RUN:LABEL     the probability of LABEL under a `train.method=classify` run's model
    reference:exact          1 when the completion equals the row's reference answer (normalized), else 0
    reference:rouge          ROUGE-L F-measure against the row's reference answer

A reward sees the prompt's last user message, the completion, and (for `reference:`) the row's
reference answer; it scores a whole round's samples in one call.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from tunesmith.errors import ConfigError

Reward = Callable[[list[str], list[str], list[str | None]], list[float]]  # (prompts, completions, references)


def concise(prompt: str, completion: str) -> float:
    """The shipped task: answer in at most 25 words (a rule a test can compute)."""
    words = len(completion.split())
    if words == 0:
        return -1.0
    return 1.0 - min(max(words - 25, 0), 25) / 25


BUILT_IN = {"concise": concise}


def load_reward(spec: str | None) -> Reward:
    if not spec:
        raise ConfigError("train.method=online-dpo needs preference.reward: a built-in (concise), file.py:function, "
                          "module:function, classifier:RUN:LABEL, or reference:exact / reference:rouge")
    if spec in BUILT_IN:
        return _per_sample(BUILT_IN[spec])
    kind, _, rest = spec.partition(":")
    if kind == "classifier":
        return _classifier_reward(*_split_classifier(spec, rest))
    if kind == "reference":
        return _reference_reward(rest, spec)
    return _per_sample(_python_function(spec))


def _per_sample(function: Callable[[str, str], float]) -> Reward:
    def score(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        values = []
        for prompt, completion in zip(prompts, completions):
            value = function(prompt, completion)
            if not isinstance(value, (int, float)):
                raise ConfigError(f"preference.reward: {getattr(function, '__name__', function)} returned {value!r}; "
                                  "a reward must return a number")
            values.append(float(value))
        return values

    return score


def _python_function(spec: str) -> Callable[[str, str], float]:
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ConfigError(f"preference.reward={spec!r}: expected file.py:function or module:function")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise ConfigError(f"preference.reward={spec!r}: no such file {path}")
        module_spec = importlib.util.spec_from_file_location(f"tunesmith_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError(f"preference.reward={spec!r}: cannot import {target} ({exc})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ConfigError(f"preference.reward={spec!r}: {target} has no function {name!r}")
    return function


def _split_classifier(spec: str, rest: str) -> tuple[str, str]:
    run, _, label = rest.rpartition(":")
    if not run or not label:
        raise ConfigError(f"preference.reward={spec!r}: expected classifier:RUN_FOLDER:LABEL")
    return run, label


def _classifier_reward(run: str, label: str) -> Reward:
    from tunesmith.models.classifier import load_classifier, predict_probabilities

    classifier = load_classifier(run)
    if label not in classifier.labels:
        raise ConfigError(f"preference.reward: the classifier in {run} has labels {', '.join(classifier.labels)}, not {label!r}")
    column = classifier.labels.index(label)

    def score(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        return predict_probabilities(classifier, completions)[:, column].tolist()

    return score


def _reference_reward(rule: str, spec: str) -> Reward:
    from tunesmith.data.text import normalize_for_match

    if rule not in ("exact", "rouge"):
        raise ConfigError(f"preference.reward={spec!r}: use reference:exact or reference:rouge")
    if rule == "rouge":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def score(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float]:
        if any(r is None for r in references):
            raise ConfigError(f"preference.reward={spec}: every prompt row needs a reference answer (chat or "
                              "instruction rows with a reply)")
        if rule == "exact":
            return [float(normalize_for_match(c) == normalize_for_match(r)) for c, r in zip(completions, references)]
        return [scorer.score(r, c)["rougeL"].fmeasure for c, r in zip(completions, references)]

    return score
