"""What grading one sample gave, and OpenAI's run response built from it (openai-python's
fine_tuning.alpha.GraderRunResponse: reward, metadata with its 14 error fields, sub_rewards,
model_grader_token_usage_per_model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# metadata.errors, in the order of OpenAI's MetadataErrors: flags, and the details that go with three of them
ERROR_FIELDS: dict[str, Any] = {
    "formula_parse_error": False, "invalid_variable_error": False, "model_grader_parse_error": False,
    "model_grader_refusal_error": False, "model_grader_server_error": False,
    "model_grader_server_error_details": None, "other_error": False, "python_grader_runtime_error": False,
    "python_grader_runtime_error_details": None, "python_grader_server_error": False,
    "python_grader_server_error_type": None, "sample_parse_error": False, "truncated_observation_error": False,
    "unresponsive_reward_error": False,
}


@dataclass
class Outcome:
    """One grader's verdict on one sample. A sample that cannot be graded gets reward 0, an error flag
    and a message saying why (OpenAI's response has flags only; the messages are tunesmith's)."""

    reward: float = 0.0
    errors: dict[str, Any] = field(default_factory=dict)  # the ERROR_FIELDS that are set
    messages: list[str] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    sub_rewards: dict[str, float] = field(default_factory=dict)

    @classmethod
    def failed(cls, flag: str, message: str, **details: Any) -> Outcome:
        return cls(errors={flag: True, **details}, messages=[message])

    @property
    def ok(self) -> bool:
        return not self.errors

    def take_errors(self, other: Outcome, name: str) -> None:
        """Add a sub-grader's errors to this (multi) grader's: flags or'ed, details joined, messages named."""
        for key, value in other.errors.items():
            if isinstance(value, str) and isinstance(self.errors.get(key), str) and value not in self.errors[key]:
                value = f"{self.errors[key]}; {value}"
            self.errors[key] = value
        self.messages += [f"{name}: {message}" for message in other.messages]


def run_response(name: str, kind: str, outcome: Outcome, seconds: float) -> dict[str, Any]:
    """OpenAI's grader run response for `outcome` (GraderRunResponse's shape, field for field)."""
    metadata: dict[str, Any] = {
        "name": name, "type": kind, "errors": {**ERROR_FIELDS, **outcome.errors}, "execution_time": seconds,
        "scores": outcome.scores, "token_usage": None, "sampled_model_name": None,
    }
    if outcome.messages:
        metadata["error_messages"] = list(outcome.messages)  # tunesmith's addition: what each flag means here
    return {"reward": outcome.reward, "metadata": metadata, "sub_rewards": outcome.sub_rewards,
            "model_grader_token_usage_per_model": {}}
