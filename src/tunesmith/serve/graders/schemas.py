"""OpenAI's grader endpoints' bodies, read from the installed SDK (openai.types.fine_tuning.alpha):
GraderRunParams (grader, model_sample, item) and GraderValidateParams (grader). The grader itself is
checked by tunesmith.graders.validate_grader, which names each bad field."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from tunesmith.serve.bodies import RequestBody


class ValidateGraderRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]


class RunGraderRequest(RequestBody):
    model_config = ConfigDict(extra="forbid")
    grader: dict[str, Any]
    model_sample: str
    item: Any = None  # the data row the grader's {{ item.x }} reads: an object
