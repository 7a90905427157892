"""Request bodies of the OpenAI endpoints, field for field as the official `openai` SDK sends them.

Fields a model is free to ignore (`user`, `metadata`, `store`) are accepted; any other field we do
not implement (`tools`, `response_format`, `logit_bias`, ...) is refused with a 400 that names it,
never silently dropped (see `unsupported_field`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from tunesmith.serve.bodies import RequestBody

IGNORED_FIELDS = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
ZERO_ONLY_FIELDS = {"frequency_penalty", "presence_penalty"}  # accepted at their neutral value only


class TextPart(RequestBody):
    type: Literal["text"]
    text: str


class ChatMessage(RequestBody):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(RequestBody):
    include_usage: bool = False


class GenerationRequest(RequestBody):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # OpenAI's: a 64-bit integer
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(stop for stop in stops if stop)

    def unsupported_field(self) -> str | None:
        """The first field given that this server does not implement, or None."""
        for name, value in (self.model_extra or {}).items():
            if name not in IGNORED_FIELDS and value is not None:
                return name
        for name in ZERO_ONLY_FIELDS:
            if getattr(self, name) not in (None, 0, 0.0):
                return name
        if self.stop is not None and len(self.stop_strings()) > 4:
            return "stop"
        return None


class ChatRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def token_budget(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def token_budget(self) -> int | None:
        return self.max_tokens

    def unsupported_field(self) -> str | None:
        if self.echo:
            return "echo"
        return super().unsupported_field()


class LoadAdapterRequest(RequestBody):
    """vLLM's body for POST /v1/load_lora_adapter."""

    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadAdapterRequest(RequestBody):
    lora_name: str = Field(min_length=1)
