"""Request bodies of the OpenAI endpoints, field for field as the official `openai` SDK sends them.

Fields a model is free to ignore (`user`, `metadata`, `store`) are accepted; any other field we do
not implement (`logit_bias`, `functions`, ...) is refused with a 400 that names it, never silently
dropped (see `unsupported_field`). Tool use (`tools`, `tool_choice`, `parallel_tool_calls`, `tool`
messages, assistant messages with `tool_calls`) and `response_format` are implemented (tools.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from tunesmith.serve.bodies import RequestBody

IGNORED_FIELDS = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier"}
ZERO_ONLY_FIELDS = {"frequency_penalty", "presence_penalty"}  # accepted at their neutral value only


class TextPart(RequestBody):
    type: Literal["text"]
    text: str


class FunctionCall(RequestBody):
    name: str = Field(min_length=1)
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(RequestBody):
    """A call an earlier assistant turn made (the client sends the reply's `tool_calls` back)."""

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(RequestBody):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant turns
    tool_call_id: str | None = None  # tool turns: the call this result answers
    refusal: str | None = None  # a reply appended to the conversation as it came (always null here)

    @model_validator(mode="after")
    def _tool_fields(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id: the id of the call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"tool_calls belong to assistant messages, not {self.role} ones")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionDefinition(RequestBody):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; left out: a function without arguments
    strict: bool | None = None  # accepted; arguments are always held to `parameters` when a call is forced


class Tool(RequestBody):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(RequestBody):
    name: str


class NamedToolChoice(RequestBody):
    type: Literal["function"]
    function: FunctionName


class JsonSchemaFormat(RequestBody):
    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # left out: any JSON object
    strict: bool | None = None  # accepted; the output is always held to the schema


class ResponseFormat(RequestBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs json_schema: {"name": ..., "schema": {...}}')
        return self


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
    tools: list[Tool] | None = Field(None, max_length=128)  # OpenAI's limit
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # None: true, as OpenAI
    response_format: ResponseFormat | None = None

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
