"""OpenAI's graders (string_check, text_similarity, score_model, label_model, python, multi), exactly
as OpenAI's API takes them, for the jobs API's grader endpoints and for training's rewards.

    validate_grader(raw) -> Grader                    the typed grader; GraderError names each bad field
    run_grader(grader, sample=, item=) -> dict        OpenAI's grader run response for one sample
    grade_many(grader, samples, items) -> [float]     the rewards of a batch (one python worker for all)

Python graders run only with `allow_python=True`; model graders ask a `model_runner(messages,
request) -> str` (LocalModelRunner by default). docs/graders.md has each grader with an example.
"""

from tunesmith.graders.model_graders import LocalModelRunner, ModelRefusal, ModelRunner
from tunesmith.graders.python_grader import PythonLimits
from tunesmith.graders.run import grade_many, run_grader
from tunesmith.graders.schema import (
    Grader,
    LabelModelGrader,
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
)
from tunesmith.graders.validate import GraderError, validate_grader

__all__ = [
    "Grader", "GraderError", "LabelModelGrader", "LocalModelRunner", "ModelRefusal", "ModelRunner", "MultiGrader",
    "PythonGrader", "PythonLimits", "ScoreModelGrader", "StringCheckGrader", "TextSimilarityGrader", "grade_many",
    "run_grader", "validate_grader",
]
