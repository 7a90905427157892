"""Reward signals for on-policy preference tuning, named in `preference.reward`.

    concise                  built in: answers of at most 25 words score 1, falling to 0 at 50 words
    my_rewards.py:score      a Python function in a file, called as score(prompt, completion) -> float
                             (a relative path is looked up next to the config file first, then from
                             the working folder); needs preference.trust_reward_code=true
    my_package.rewards:score the same, from an importable module; needs the same
    classifier:RUN:LABEL     the probability of LABEL under a `train.method=classify` run's model
    reference:exact          1 when the completion equals the row's reference answer (normalized), else 0
    reference:rouge          ROUGE-L F-measure against the row's reference answer

A reward sees the prompt's last user message, the completion, and (for `reference:`) the row's
reference answer; it scores a whole round's samples in one call, and names the row (file:line of its
prompt) when a score cannot be had.

A Python function is code named by a config file: like `model.trust_remote_code`, it runs only when
`preference.trust_reward_code` says so (`module:function` could name any installed callable, such as
os:system). The built-ins, `classifier:` and `reference:` run no code from the config.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from tunesmith.errors import ConfigError

# (prompts, completions, references, wheres: file:line of each prompt's row) -> one score per completion
Reward = Callable[[list[str], list[str], list[str | None], list[str]], list[float]]


def concise(prompt: str, completion: str) -> float:
    """The shipped task: answer in at most 25 words (a rule a test can compute)."""
    words = len(completion.split())
    if words == 0:
        return -1.0
    return 1.0 - min(max(words - 25, 0), 25) / 25


BUILT_IN = {"concise": concise}


def load_reward(spec: str | None, *, trust_code: bool = False) -> Reward:
    """The reward `spec` names (see the module docstring); a Python function only with `trust_code`."""
    if not spec:
        raise ConfigError("train.method=online-dpo needs preference.reward: a built-in (concise), file.py:function, "
                          "module:function, classifier:RUN:LABEL, or reference:exact / reference:rouge")
    if spec in BUILT_IN:
        return _per_sample(BUILT_IN[spec], spec)
    kind, _, rest = spec.partition(":")
    if kind == "classifier":
        return _classifier_reward(*_split_classifier(spec, rest))
    if kind == "reference":
        return _reference_reward(rest, spec)
    if not trust_code:
        raise ConfigError(f"preference.reward={spec!r} runs Python code named in the config; set "
                          "preference.trust_reward_code=true if you wrote it or trust its author, or use a built-in "
                          f"({', '.join(BUILT_IN)}), classifier:RUN:LABEL or reference:exact / reference:rouge")
    return _per_sample(_python_function(spec), spec)


def _per_sample(function: Callable[[str, str], float], spec: str) -> Reward:
    """Score one completion at a time; whatever goes wrong names the reward and the prompt's row."""
    def score(prompts: list[str], completions: list[str], references: list[str | None], wheres: list[str]) -> list[float]:
        values = []
        for prompt, completion, where in zip(prompts, completions, wheres):
            try:
                value = function(prompt, completion)
            except Exception as exc:
                raise ConfigError(f"{where}: preference.reward={spec} raised {type(exc).__name__}: {exc} while scoring "
                                  f"the completion {completion[:60]!r}; fix the function (--debug shows where it "
                                  "failed) or the row") from exc
            if not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: preference.reward={spec} returned {value!r}; a reward must return a number")
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
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise ConfigError(f"preference.reward={spec!r}: running {path} failed with {type(exc).__name__}: {exc}; "
                              "fix the file (--debug shows where)") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ConfigError(f"preference.reward={spec!r}: cannot import {target} ({type(exc).__name__}: {exc})") from exc
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

    def score(prompts: list[str], completions: list[str], references: list[str | None], wheres: list[str]) -> list[float]:
        return predict_probabilities(classifier, completions)[:, column].tolist()

    return score


def _reference_reward(rule: str, spec: str) -> Reward:
    from tunesmith.data.text import normalize_for_match

    if rule not in ("exact", "rouge"):
        raise ConfigError(f"preference.reward={spec!r}: use reference:exact or reference:rouge")
    if rule == "rouge":
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def score(prompts: list[str], completions: list[str], references: list[str | None], wheres: list[str]) -> list[float]:
        missing = next((where for where, r in zip(wheres, references) if r is None), None)
        if missing is not None:
            raise ConfigError(f"{missing}: preference.reward={spec} needs a reference answer, and this prompt row has "
                              "none; give chat or instruction rows with a reply")
        if rule == "exact":
            return [float(normalize_for_match(c) == normalize_for_match(r)) for c, r in zip(completions, references)]
        return [scorer.score(r, c)["rougeL"].fmeasure for c, r in zip(completions, references)]

    return score
