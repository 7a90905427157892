"""OpenAI's grader objects as typed models, field for field (openai-python's types/graders/).

Each model forbids keys OpenAI does not define, so a misspelt key is an error that names the close
valid one rather than a setting silently ignored. `validate_grader` (validate.py) turns a raw dict
into one of these, with every problem named by its path (`grader.graders.b.evaluation_metric`).
"""

from __future__ import annotations

import ast
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from tunesmith.graders.templates import check_templates

STRING_OPERATIONS = ("eq", "ne", "like", "ilike")
SIMILARITY_METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                      "rouge_4", "rouge_5", "rouge_l")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
PYTHON_SOURCE_LIMIT = 256 * 1024  # OpenAI's: "the provided code must be less than 256 kB"


class _OpenAIObject(BaseModel):
    # strict: a number is not text and text is not a number, as in OpenAI's JSON schema
    model_config = ConfigDict(extra="forbid", strict=True)


def _templated(value: str) -> str:
    check_templates(value)
    return value


TemplatedText = Annotated[str, AfterValidator(_templated)]  # text that may hold {{ item.x }} / {{ sample.x }}


class InputText(_OpenAIObject):
    """A text part of a message to a grader model (may hold templates)."""

    type: Literal["input_text"] = Field(description="Always `input_text`.")
    text: TemplatedText = Field(description="The text; may hold {{ item.field }} and {{ sample.output_text }} templates.")


class OutputText(_OpenAIObject):
    """A text output of a model, as a part of a message to a grader model (may hold templates)."""

    type: Literal["output_text"] = Field(description="Always `output_text`.")
    text: TemplatedText = Field(description="The text; may hold templates.")


class InputImage(_OpenAIObject):
    """An image part (OpenAI's schema accepts it; tunesmith's local grader model reads text only)."""

    type: Literal["input_image"] = Field(description="Always `input_image`.")
    image_url: str = Field(description="The URL of the image.")
    detail: str | None = Field(None, description="high, low or auto.")


class AudioData(_OpenAIObject):
    data: str = Field(description="Base64-encoded audio.")
    format: Literal["mp3", "wav"] = Field(description="mp3 or wav.")


class InputAudio(_OpenAIObject):
    """An audio part (OpenAI's schema accepts it; tunesmith's local grader model reads text only)."""

    type: Literal["input_audio"] = Field(description="Always `input_audio`.")
    input_audio: AudioData = Field(description="The audio and its format.")


ContentPart = Annotated[InputText | OutputText | InputImage | InputAudio, Field(discriminator="type")]
CONTENT_PARTS = {"input_text": InputText, "output_text": OutputText, "input_image": InputImage,
                 "input_audio": InputAudio}


class GraderMessage(_OpenAIObject):
    """One message of a model grader's prompt."""

    role: Literal["user", "assistant", "system", "developer"] = Field(description="Who speaks.")
    content: TemplatedText | ContentPart | list[TemplatedText | ContentPart] = Field(
        description="Text, a content part, or a list of them; text may hold templates.")
    type: Literal["message"] | None = Field(None, description="Always `message` where given.")


class SamplingParams(_OpenAIObject):
    """How the grader model samples."""

    max_completions_tokens: int | None = Field(None, ge=1, description="Most tokens the grader model writes.")
    reasoning_effort: Literal[REASONING_EFFORTS] | None = Field(  # type: ignore[valid-type]
        None, description="For reasoning models; a local model ignores it.")
    seed: int | None = Field(None, description="Seed of the sampling.")
    temperature: float | None = Field(None, ge=0, description="Sampling temperature (0: greedy).")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")


class StringCheckGrader(_OpenAIObject):
    """1 when `input` and `reference` pass `operation`, else 0."""

    type: Literal["string_check"] = Field(description="Always `string_check`.")
    name: str = Field(description="The grader's name.")
    input: TemplatedText = Field(description="The text checked; may hold templates.")
    reference: TemplatedText = Field(description="The text it is checked against; may hold templates.")
    operation: Literal[STRING_OPERATIONS] = Field(  # type: ignore[valid-type]
        description="eq (equal), ne (not equal), like (input contains reference), ilike (the same, ignoring case).")


class TextSimilarityGrader(_OpenAIObject):
    """`evaluation_metric` of `input` against `reference` (0 to 1; cosine -1 to 1)."""

    type: Literal["text_similarity"] = Field(description="Always `text_similarity`.")
    name: str = Field(description="The grader's name.")
    input: TemplatedText = Field(description="The text graded; may hold templates.")
    reference: TemplatedText = Field(description="The text graded against; may hold templates.")
    evaluation_metric: Literal[SIMILARITY_METRICS] = Field(  # type: ignore[valid-type]
        description="The metric (docs/graders.md names each one's reference implementation).")


class PythonGrader(_OpenAIObject):
    """`grade(sample, item)` defined in `source`, run in a child process (only when trusted)."""

    type: Literal["python"] = Field(description="Always `python`.")
    name: str = Field(description="The grader's name.")
    source: str = Field(description="Python source defining grade(sample, item) -> float.")
    image_tag: str | None = Field(None, description="OpenAI's runtime image; tunesmith runs this machine's Python.")

    @field_validator("source")
    @classmethod
    def _defines_grade(cls, source: str) -> str:
        size = len(source.encode("utf-8"))
        if size >= PYTHON_SOURCE_LIMIT:
            raise ValueError(f"is {size} bytes; OpenAI's limit is 256 kB (262144 bytes)")
        try:
            tree = ast.parse(source)  # parsed, never run: running it needs the trust flag
        except SyntaxError as error:
            raise ValueError(f"is not valid Python (line {error.lineno}: {error.msg})") from None
        if "grade" not in _top_level_names(tree):
            raise ValueError("defines no grade(sample, item); the grader calls grade with the sample and the item")
        return source


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


class ScoreModelGrader(_OpenAIObject):
    """A model reads the prompt in `input` and answers with a score in `range`."""

    type: Literal["score_model"] = Field(description="Always `score_model`.")
    name: str = Field(description="The grader's name.")
    model: str = Field(description="The grader model (what the model runner is asked for).")
    input: list[GraderMessage] = Field(min_length=1, description="The prompt: messages that may hold templates.")
    range: list[float] | None = Field(None, description="[lowest, highest] score; [0, 1] when not given.")
    sampling_params: SamplingParams | None = Field(None, description="How the grader model samples.")

    @field_validator("range")
    @classmethod
    def _two_ordered_numbers(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or not value[0] < value[1]):
            raise ValueError("must be two numbers [lowest, highest] with lowest < highest")
        return value

    @property
    def score_range(self) -> tuple[float, float]:
        low, high = self.range or (0.0, 1.0)
        return float(low), float(high)


class LabelModelGrader(_OpenAIObject):
    """A model reads the prompt in `input` and picks one of `labels`: 1 when it is a passing label."""

    type: Literal["label_model"] = Field(description="Always `label_model`.")
    name: str = Field(description="The grader's name.")
    model: str = Field(description="The grader model (what the model runner is asked for).")
    input: list[GraderMessage] = Field(min_length=1, description="The prompt: messages that may hold templates.")
    labels: list[str] = Field(min_length=1, description="The labels the model chooses from.")
    passing_labels: list[str] = Field(min_length=1, description="The labels that pass; a subset of labels.")

    @field_validator("labels")
    @classmethod
    def _distinct(cls, labels: list[str]) -> list[str]:
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(map(repr, repeated))} more than once; give each label once")
        return labels

    @field_validator("passing_labels")
    @classmethod
    def _subset(cls, passing: list[str], info: object) -> list[str]:
        labels = getattr(info, "data", {}).get("labels")
        unknown = [label for label in passing if labels is not None and label not in labels]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} not in labels; passing_labels must be a subset of labels")
        return passing


SubGrader = Annotated[StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader,
                      Field(discriminator="type")]


class MultiGrader(_OpenAIObject):
    """Named graders combined by the formula `calculate_output`."""

    type: Literal["multi"] = Field(description="Always `multi`.")
    name: str = Field(description="The grader's name.")
    graders: dict[str, SubGrader] = Field(
        description="The graders, by the names the formula uses (OpenAI's guide: a mapping of name to grader).")
    calculate_output: str = Field(
        description="A formula over the graders' names: + - * / ^ (power), numbers, parentheses, and "
                    "min, max, abs, floor, ceil, exp, sqrt, log.")


Grader = StringCheckGrader | TextSimilarityGrader | PythonGrader | ScoreModelGrader | LabelModelGrader | MultiGrader
GRADER_TYPES: dict[str, type[BaseModel]] = {
    "string_check": StringCheckGrader, "text_similarity": TextSimilarityGrader, "python": PythonGrader,
    "score_model": ScoreModelGrader, "label_model": LabelModelGrader, "multi": MultiGrader,
}
