"""preference: preference tuning, dpo on given pairs and online-dpo on the model's own samples."""

from __future__ import annotations

from typing import Literal

from tunesmith.config.base import Section, setting


class PreferenceConfig(Section):
    """Preference tuning: train.method dpo (given pairs) or online-dpo (pairs from the model's own samples)."""

    loss: Literal["dpo", "simpo"] = setting(
        "dpo",
        "dpo: sigmoid DPO against a reference (the same weights with the adapter off, or the starting "
        "weights). simpo: reference-free, length-normalised log-probabilities with a target margin.", job=True,
    )
    beta: float = setting(
        0.1, "DPO: how far the model may move from the reference (smaller lets it move further). SimPO: reward "
        "scale (try 2.0).", job=True, gt=0,
    )
    simpo_gamma: float = setting(0.5, "SimPO: target margin between chosen and rejected rewards.", job=True, ge=0)
    reward: str | None = setting(
        None,
        "online-dpo's reward: a built-in (`concise`), a Python function `file.py:name` or `module:name` called as "
        "name(prompt, completion) -> float, `classifier:RUN:LABEL` (probability of LABEL under a classify "
        "run), or `reference:exact` / `reference:rouge` against each row's reference answer. A relative "
        "file.py in a config file is looked up next to that config file first.",
    )
    trust_reward_code: bool = setting(
        False, "Run the Python function preference.reward names (file.py:name or module:name). Off unless you "
        "trust that code; built-ins, classifier: and reference: rewards need no trust.",
    )
    samples: int = setting(4, "online-dpo: completions sampled per prompt; the best and the worst make a pair.",
                           ge=2)
    prompts_per_round: int = setting(8, "online-dpo: prompts sampled per round (one optimizer step per round).",
                                     ge=1)
    temperature: float = setting(1.0, "online-dpo: sampling temperature (positive: pairs need different samples).",
                                 gt=0)
    top_p: float = setting(1.0, "online-dpo: nucleus sampling threshold.", gt=0, le=1)
    max_new_tokens: int = setting(64, "online-dpo: longest sampled completion.", ge=1)
