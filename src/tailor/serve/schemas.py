"""Request bodies of the OpenAI-compatible API (the subset tailor serves), as pydantic models.

Fields tailor does not act on but clients commonly send (user, logprobs=false, ...) are accepted
and ignored; anything that would change the answer in a way tailor cannot honour (n > 1, logprobs,
tools) is refused with a 400 naming the field. Value ranges are checked here; limits that depend on
the server (max_tokens, prompt length) are checked by the app against its `Limits`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[dict]

    @field_validator("content")
    @classmethod
    def _text(cls, value):
        if isinstance(value, list):  # [{"type": "text", "text": ...}, ...]: text parts only
            if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in value):
                raise ValueError("only text content parts are supported")
            return "".join(part["text"] for part in value)
        return value


class StreamOptions(BaseModel):
    include_usage: bool = False


# Fields a client may send that tailor cannot honour: set (truthy), they get a 400 with this message.
REFUSED = {
    "frequency_penalty": "not supported; use repetition_penalty (1.0 = off, up to 2.0)",
    "presence_penalty": "not supported; use repetition_penalty (1.0 = off, up to 2.0)",
    "logprobs": "logprobs are not supported",
    "tools": "tools are not supported",
    "echo": "echo is not supported",
}


class Decoding(BaseModel):
    """Decoding parameters shared by both generation endpoints; unset ones take the run's defaults."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=1000)
    repetition_penalty: float | None = Field(None, ge=1.0, le=2.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # what torch's generators accept
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None

    @field_validator(*REFUSED, check_fields=False)  # tools and echo are the subclasses' fields
    @classmethod
    def _refused(cls, value, info):
        if value:
            raise ValueError(REFUSED[info.field_name])
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops


class ChatRequest(Decoding):
    messages: list[Message] = Field(min_length=1)
    tools: list | None = None


class CompletionRequest(Decoding):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("one prompt per request (a list of exactly one string)")
            return value[0]
        return value


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    input: str | list[str]

    @field_validator("input")
    @classmethod
    def _texts(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input needs at least one text")
        return texts
