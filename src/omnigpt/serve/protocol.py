"""The requests of OpenAI's API that the server takes, as pydantic models, and its error shape.

Fields the server does not use (user, metadata, ...) are ignored, as OpenAI-compatible servers do; fields
whose effect it cannot give (logprobs, tools, penalties other than 0) are refused with a 400 that names them.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_STOP = 4  # stop strings per request, as OpenAI allows


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImageURL(_Model):
    url: str = Field(min_length=1)
    detail: Optional[str] = None


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Model):
    data: str = Field(min_length=1)
    format: Literal["wav", "flac", "mp3"]


class AudioPart(_Model):
    type: Literal["input_audio"]
    input_audio: InputAudio


Part = Annotated[Union[TextPart, ImagePart, AudioPart], Field(discriminator="type")]


class Message(_Model):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, Annotated[list[Part], Field(min_length=1)]]
    name: Optional[str] = None


class StreamOptions(_Model):
    include_usage: bool = False


class Sampling(_Model):
    """What both completion endpoints take."""
    model: str
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=64)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    max_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, Annotated[list[str], Field(max_length=MAX_STOP)], None] = None
    seed: Optional[int] = Field(None, ge=0, le=2 ** 63 - 1)
    presence_penalty: float = Field(0.0, ge=0, le=0, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=0, le=0, allow_inf_nan=False)
    logprobs: Optional[Literal[False]] = None

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stops):
            raise APIError(400, "a stop string must not be empty", param="stop")
        return stops


class ChatRequest(Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    tools: Optional[Annotated[list, Field(max_length=0)]] = None

    def token_limit(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(Sampling):
    prompt: Union[str, Annotated[list[str], Field(min_length=1)]]
    echo: Literal[False] = False
    suffix: Optional[Literal[""]] = None
    best_of: Optional[Literal[1]] = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def token_limit(self) -> Optional[int]:
        return self.max_tokens


class TranscriptionRequest(_Model):
    """The text fields of a transcription form (the audio comes as its file)."""
    model: str
    language: Optional[str] = Field(None, max_length=32)
    prompt: Optional[str] = None
    temperature: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    timestamp_granularities: list[Literal["segment"]] = Field(default_factory=list, max_length=1)
    stream: bool = False


def parse(model: type[_Model], body: object) -> _Model:
    """Validate a decoded JSON body; the first problem becomes a 400 naming the field (`messages.0.content`)."""
    if not isinstance(body, dict):
        raise APIError(400, f"the body must be a JSON object, got {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        # of a union's members, the one that got furthest says most (a bad part, not "not a string")
        first = errors[max(range(len(errors)), key=lambda i: (len(errors[i]["loc"]), i))]
        where = field_name(first["loc"])
        raise APIError(400, f"{where}: {first['msg']}" if where else first["msg"], param=where or None,
                       code="invalid_value") from None


def field_name(loc: tuple) -> str:
    """pydantic's location of an error as the field's name: `messages.0.content.1.image_url.url`, without
    the labels of the union members it tried (`str`, `list[...]`, a part's tag)."""
    names: list[str] = []
    for x in map(str, loc):
        if "[" in x or x in ("str", "int", "float", "bool") or (names and names[-1] == x):
            continue
        names.append(x)
    return ".".join(names)
