"""grpo: group relative policy optimisation (train.method grpo) on the model's own samples, scored
by an OpenAI grader (grpo.grader) or by preference.reward."""

from __future__ import annotations

from typing import Any, Literal

from tunesmith.config.base import Section, setting


class GrpoConfig(Section):
    """GRPO: per prompt a group of sampled completions, rewards normalised within the group, a clipped
    policy-ratio objective and a KL term to the reference. The reward is grpo.grader, or preference.reward."""

    # Not job=True: a job gives its grader through OpenAI's method.reinforcement.grader (jobs/settings.py)
    grader: dict[str, Any] | None = setting(
        None, "The reward: an OpenAI grader object (string_check, text_similarity, score_model, label_model, python, "
        "multi; docs/graders.md), exactly as OpenAI's reinforcement fine-tuning takes it. `{{ item.FIELD }}` reads "
        "the prompt row's own fields, `{{ sample.output_text }}` the completion. Instead of preference.reward.",
    )
    trust_python_grader: bool = setting(
        False, "Run python graders in grpo.grader (their `source` runs on this machine, in a subprocess with time "
        "and memory limits). Off unless you wrote the grader or trust its author; `tunesmith train "
        "--trust-python-graders` sets it.",
    )

    group_size: int = setting(
        8, "Completions sampled per prompt (G); each one's advantage is its reward against its group's.", job=True, ge=2,
    )
    prompts_per_step: int = setting(4, "Prompts sampled per rollout: a rollout is prompts_per_step x group_size "
                                    "completions, all of them in each optimizer step it feeds.", job=True, ge=1)
    epochs: int = setting(
        1, "Optimizer steps on each rollout (mu). 1: every step samples afresh and the ratio to the sampling policy "
        "is 1 (the clip never binds); more reuse a rollout, the clip keeping the later steps near it.", job=True, ge=1,
    )
    clip_epsilon: float = setting(0.2, "The policy ratio is clipped to [1 - epsilon, 1 + epsilon].", job=True,
                                  gt=0, lt=1)
    # 0.04 is the GRPO paper's (Shao et al. 2024). TRL's default is 0.0 since DAPO and Dr. GRPO found the
    # KL term needless for verifiable (math) rewards; ours also include heuristics and classifiers a
    # policy can game, and with LoRA the reference costs no memory (the adapter switched off).
    beta: float = setting(
        0.04, "Weight of the KL term to the reference (the model with its adapter off). 0.04 as in the GRPO paper: "
        "rewards such as `concise` or a classifier can be gamed by drifting into text the base would never "
        "write, and with LoRA the reference costs no memory. 0 drops it (as TRL's default, for verifiable "
        "rewards); full fine-tuning needs 0 (no second copy of the weights).", job=True, ge=0,
    )
    # TRL's GRPOConfig defaults to "dapo" (checked against TRL's documentation: trl is not installed here).
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = setting(
        "dapo",
        "How the per-token losses of a step are averaged. dapo (default, as TRL's): over all completion tokens of "
        "the step, so every token weighs the same and long completions are not under-weighted (DAPO, Yu et al. "
        "2025). grpo: the mean over each completion's tokens, then over completions (the GRPO paper; a long "
        "completion's tokens weigh less, which biases length). dr_grpo: the sum over tokens divided by "
        "completions x grpo.max_new_tokens, a constant (Dr. GRPO, Liu et al. 2025).", job=True,
    )
    scale_rewards: bool = setting(
        True, "Divide each completion's advantage by its group's reward standard deviation (GRPO); false keeps "
        "only the mean subtracted (Dr. GRPO: the scaling weighs near-unanimous groups most).", job=True,
    )
    temperature: float = setting(1.0, "Sampling temperature (positive: a group needs different completions).",
                                 job=True, gt=0)
    top_p: float = setting(1.0, "Nucleus sampling threshold.", job=True, gt=0, le=1)
    # TRL's GRPOConfig defaults to top_k 0 as well; transformers would add top_k=50 where left unset
    top_k: int = setting(0, "Sample among the k most likely tokens only; 0 (default): no cut, the policy's whole "
                         "distribution, which its log-probabilities in the loss are measured on.", job=True, ge=0)
    max_new_tokens: int = setting(128, "Longest sampled completion; also dr_grpo's normalizer.", job=True, ge=1)
