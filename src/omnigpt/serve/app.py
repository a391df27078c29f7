"""The HTTP server: OpenAI's chat completions, completions and models endpoints on FastAPI, answered by one
`Engine` that batches every running request (see engine.py).

A chat request's messages are rendered with the model's chat template (`ChatTemplate.of`, the built-in one
when the tokenizer has none), each image or clip becoming an `<image>` / `<audio>` placeholder where its part
stood, text parts joined by spaces as in training data. Prompts are tokenized and their media featurized by
`generate.prepare_prompts` / `prepare_media` / `audio_features`, as `generate` does, so a request gets what
`generate` gives for the same prompt.

Transcriptions (transcriptions.py) run `transcribe_steps` in the engine's thread, a batch of windows between two
decoding steps (`Engine.call`): the model is never run by two threads at once. Every request is counted for `/metrics`
(metrics.py).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Optional

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..checkpoint import Checkpoint, load_checkpoint
from ..data.conversations import ChatTemplate
from ..data.sources import reserved_token, resolve_root
from ..data.audio import AudioError, load_audio
from ..data.text import DataError
from ..extras import MissingExtraError
from ..generate import (GenerationConfig, GenerationError, PromptTooLongError, audio_features, audio_media,
                        audio_token_counts, check_placeholders, image_tokens, prepare_media, prepare_prompts)
from ..tokenizer import TokenizerError
from ..transcribe import transcribe_steps
from . import transcriptions
from .bodies import read_form, read_json
from .engine import Delta, Engine, EngineClosed, Failed, Finished, Job, Prompt, QueueFull
from .media import read_audio, read_image
from .metrics import MeasureRequests, Metrics
from .protocol import APIError, ChatRequest, CompletionRequest, Message, Sampling, TranscriptionRequest, parse


PLAYGROUND = Path(__file__).with_name("playground.html")
# The page runs only its own inline script and talks only to this server; images and recordings stay in
# the page as data: and blob: URLs.
PLAYGROUND_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src data: blob:; media-src data: blob:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass
class Limits:
    """What one request may ask of the server."""
    max_body_bytes: int = 32 * 2 ** 20
    max_image_pixels: int = 4096 * 4096
    max_audio_seconds: float = 30.0  # and at most the model's audio.max_seconds
    max_media: int = 4  # images and clips in one request
    max_transcription_seconds: float = 3600.0  # one recording sent to /v1/audio/transcriptions


class Server:
    """What the endpoints share: the model and tokenizer, the engine, the key and the limits."""

    def __init__(self, ckpt: Checkpoint, model_id: str, engine: Engine, api_key: Optional[str], limits: Limits,
                 media_root: Optional[Path]):
        self.ckpt, self.model, self.tokenizer = ckpt, ckpt.model, ckpt.tokenizer
        self.model_id, self.engine, self.api_key, self.limits = model_id, engine, api_key, limits
        self.media_root = media_root
        self.template = ChatTemplate.of(ckpt.tokenizer)
        self.created = int(time.time())
        self.metrics = Metrics()

    # --------------------------------------------------------------------------------------- checks
    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    def check_model(self, name: str) -> None:
        if name != self.model_id:
            raise APIError(404, f"the model {name!r} does not exist: this server serves {self.model_id!r}",
                           param="model", code="model_not_found")

    # -------------------------------------------------------------------------------------- prompts
    def chat_prompt(self, messages: list[Message]) -> tuple[str, list, list]:
        """The template's prompt for the messages, and the images and clips its placeholders stand for."""
        images, clips, rendered = [], [], []
        for m, message in enumerate(messages):
            role = "system" if message.role == "developer" else message.role
            if isinstance(message.content, str):
                rendered.append({"role": role, "content": self._text(message.content, f"messages.{m}.content")})
                continue
            pieces = []
            for k, part in enumerate(message.content):
                where = f"messages.{m}.content.{k}"
                if part.type == "text":
                    pieces.append(self._text(part.text, f"{where}.text"))
                    continue
                if role != "user":
                    raise APIError(400, f"{where}: only user messages may hold images or audio", param=where)
                if len(images) + len(clips) >= self.limits.max_media:
                    raise APIError(400, f"{where}: at most {self.limits.max_media} images and clips per request",
                                   param=where)
                if part.type == "image_url":
                    images.append(self._image(part.image_url.url, f"{where}.image_url.url"))
                    pieces.append("<image>")
                else:
                    clips.append(self._audio(part.input_audio.data, part.input_audio.format,
                                             f"{where}.input_audio.data"))
                    pieces.append("<audio>")
            rendered.append({"role": role, "content": " ".join(p for p in pieces if p)})
        try:
            return self.template.prompt(rendered), images, clips
        except DataError as exc:  # the template refuses the conversation (raise_exception), or fails on it
            raise APIError(400, str(exc), param="messages") from None

    @staticmethod
    def _text(text: str, where: str) -> str:
        token = reserved_token(text)
        if token is not None:
            raise APIError(400, f"{where} holds the special token {token}: send images and audio as content "
                                f"parts", param=where)
        return text

    def _image(self, url: str, where: str):
        if "image" not in self.model.accepts:
            raise APIError(400, f"{where}: the model {self.model_id} does not take images", param=where)
        return read_image(url, where, self.media_root, self.limits.max_image_pixels, self.limits.max_body_bytes)

    def _audio(self, data: str, fmt: str, where: str) -> torch.Tensor:
        if "audio" not in self.model.accepts:
            raise APIError(400, f"{where}: the model {self.model_id} does not take audio", param=where)
        hearing = self.model.audio_config
        longest = min(self.limits.max_audio_seconds, hearing.max_seconds or float("inf"))
        return read_audio(data, fmt, where, hearing.sample_rate, longest, self.limits.max_body_bytes)

    def recording(self, data: bytes, filename: Optional[str]) -> torch.Tensor:
        """An uploaded recording -> mono samples at the model's rate (samples,); 400 if the model has no
        audio encoder or the file does not decode, or is longer than the limit."""
        if "audio" not in self.model.accepts:
            raise APIError(400, f"the model {self.model_id} has no audio encoder: it cannot transcribe",
                           param="model", code="model_not_supported")
        try:
            return load_audio(data, self.model.audio_config.sample_rate,
                              max_seconds=self.limits.max_transcription_seconds, name=f"file ({filename or 'audio'})")
        except (AudioError, MissingExtraError) as exc:
            raise APIError(400, str(exc), param="file") from None

    async def run_in_engine(self, request: Request, work):
        """work() run by the engine's thread (it may use the model; a generator a piece per step); None if the
        client leaves first."""
        try:
            future = self.engine.call(work)
        except QueueFull as exc:
            raise APIError(429, f"the server is busy: {exc}; retry later", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        except EngineClosed as exc:
            raise APIError(503, str(exc), type="server_error") from None
        waiting = asyncio.wrap_future(future)
        while not (await asyncio.wait({waiting}, timeout=1.0))[0]:
            if await request.is_disconnected():
                self.engine.cancel(future)  # dropped if not started; a running one stops at its next piece
                waiting.cancel()
                return None
        try:
            return waiting.result()
        except (GenerationError, TokenizerError, DataError) as exc:
            raise APIError(400, str(exc)) from None

    def job(self, req: Sampling, prompts: list[tuple[str, list, list]], field: str) -> Job:
        """Tokenize and featurize the prompts (as `generate` does); max_tokens is capped by the context."""
        try:
            cfg = GenerationConfig(max_new_tokens=1, temperature=req.temperature,
                                   top_p=None if req.top_p >= 1 else req.top_p, stop_strings=req.stop_strings(),
                                   seed=req.seed)
            cfg.validate()
            ready, longest = [], 0
            for text, images, clips in prompts:
                features = audio_features(self.model, [clips])
                (ids,) = prepare_prompts(self.model, self.tokenizer, [text], cfg,
                                         audio_token_counts(self.model, features))
                check_placeholders([ids], [images], self.tokenizer.image_id, image_tokens(self.model))
                media = {**prepare_media(self.model, [images]), **audio_media(self.model, features)}
                ready.append(Prompt(ids, media))
                longest = max(longest, len(ids))
        except PromptTooLongError as exc:
            raise APIError(400, f"{exc.problem}: the prompt is too long", param=field,
                           code="context_length_exceeded") from None
        except (GenerationError, TokenizerError, DataError) as exc:
            raise APIError(400, str(exc)) from None
        room = self.model.config.block_size - longest + 1  # the last new token needs no position
        asked = req.token_limit()
        cfg.max_new_tokens = min(asked, room) if asked is not None else room
        rows = len(ready) * req.n
        if rows > self.engine.max_batch:
            raise APIError(400, f"{len(ready)} prompt(s) x n={req.n} is {rows} sequences, more than this server "
                                f"runs at once ({self.engine.max_batch}, --max-batch)", param="n")
        return Job(ready, cfg, on_event=lambda e: None, n=req.n)

    # ------------------------------------------------------------------------------------- answering
    async def answer(self, request: Request, req: Sampling, job: Job, chat: bool, arrived: float):
        """Queue the job and answer with its reply, streamed or whole; `arrived` (time.perf_counter()) is when
        the request came, for the time-to-first-token metric."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_event(event) -> None:  # from the engine's thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop is gone (shutdown): nobody listens
                job.cancel()

        job.on_event = on_event
        try:
            self.engine.submit(job)
        except QueueFull as exc:
            raise APIError(429, f"the server is busy: {exc}; retry later", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        except EngineClosed as exc:
            raise APIError(503, str(exc), type="server_error") from None
        reply = Reply(self, job, chat, "chatcmpl-" if chat else "cmpl-", arrived)
        self.metrics.tokens(prompt=sum(len(p.ids) for p in job.prompts))
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            return StreamingResponse(reply.chunks(events, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            while not reply.done:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return None
                    continue
                reply.take(event)
        finally:
            if not reply.done:
                job.cancel()
        if reply.failure:
            raise APIError(500, reply.failure, type="server_error")
        return reply.body()


class Reply:
    """The choices of one job as its events arrive: text, finish reasons, token counts, in OpenAI's shapes.
    A chat reply drops the whitespace the template leaves before it (`assistant: Blue.` -> `Blue.`)."""

    def __init__(self, server: Server, job: Job, chat: bool, prefix: str, arrived: float):
        self.server, self.job, self.chat, self.arrived = server, job, chat, arrived
        self.first_token_seen = False
        self.id = prefix + uuid.uuid4().hex
        self.created = int(time.time())
        self.texts = [""] * job.rows
        self.reasons: list[Optional[str]] = [None] * job.rows
        self.tokens = 0
        self.failure: Optional[str] = None

    @property
    def done(self) -> bool:
        return self.failure is not None or all(r is not None for r in self.reasons)

    def take(self, event) -> str:
        """Apply an event; returns the new text of a Delta ('' otherwise)."""
        if not self.first_token_seen and isinstance(event, (Delta, Finished)):
            self.first_token_seen = True
            self.server.metrics.first_token_after(time.perf_counter() - self.arrived)
        if isinstance(event, Failed):
            self.failure = event.message
        elif isinstance(event, Finished):
            self.reasons[event.index] = event.reason
            self.tokens += event.tokens
            self.server.metrics.tokens(generated=event.tokens)
        elif isinstance(event, Delta):
            text = event.text
            if self.chat and not self.texts[event.index]:
                text = text.lstrip()
            self.texts[event.index] += text
            return text
        return ""

    def usage(self) -> dict:
        prompt = sum(len(p.ids) for p in self.job.prompts)
        return {"prompt_tokens": prompt, "completion_tokens": self.tokens, "total_tokens": prompt + self.tokens}

    def body(self) -> dict:
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": r,
                        "logprobs": None} for i, (t, r) in enumerate(zip(self.texts, self.reasons))]
        else:
            choices = [{"index": i, "text": t, "finish_reason": r, "logprobs": None}
                       for i, (t, r) in enumerate(zip(self.texts, self.reasons))]
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.server.model_id, "choices": choices, "usage": self.usage(),
                "system_fingerprint": None}

    def chunk(self, index: Optional[int] = None, text: Optional[str] = None, reason: Optional[str] = None,
              role: bool = False, usage: bool = False) -> str:
        if usage:
            choices = []
        elif self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
            choices = [{"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}]
        else:
            choices = [{"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}]
        out = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.server.model_id, "choices": choices}
        if usage:
            out["usage"] = self.usage()
        return f"data: {json.dumps(out, ensure_ascii=False)}\n\n"

    async def chunks(self, events: asyncio.Queue, usage: bool) -> AsyncIterator[str]:
        """Server-sent events: a chunk per piece of text, one per finished choice, then `data: [DONE]`.
        A client that goes away cancels this generator, and with it the job."""
        try:
            if self.chat:
                for i in range(self.job.rows):
                    yield self.chunk(i, role=True)
            while not self.done:
                event = await events.get()
                text = self.take(event)
                if isinstance(event, Failed):
                    yield f"data: {json.dumps(APIError(500, event.message, type='server_error').body())}\n\n"
                elif isinstance(event, Finished):
                    yield self.chunk(event.index, reason=event.reason)
                elif text:
                    yield self.chunk(event.index, text)
            if usage and not self.failure:
                yield self.chunk(usage=True)
            yield "data: [DONE]\n\n"
        finally:
            if not self.done:
                self.job.cancel()


# ------------------------------------------------------------------------------------------- the app
def create_app(checkpoint: str | Path | Checkpoint, *, device: str = "auto", dtype: str = "auto",
               adapter: Optional[str] = None, api_key: Optional[str] = None, max_batch: int = 16,
               max_queue: int = 64, media_root: Optional[str | Path] = None, limits: Optional[Limits] = None,
               model_id: Optional[str] = None) -> FastAPI:
    """An OpenAI-compatible app serving a checkpoint (a folder, `hf:ORG/NAME`, or a loaded `Checkpoint`).

    api_key: every endpoint but /health then needs `Authorization: Bearer KEY`. max_batch: sequences decoded
    together; max_queue: requests that may wait for them (then 429). media_root: the folder whose files
    image_url parts may name (without it, images come as data: URLs only). model_id: the name clients give as
    `model` (default: the checkpoint's folder name). The engine's thread stops when the app shuts down.
    """
    if isinstance(checkpoint, Checkpoint):
        ckpt = checkpoint
        name = ckpt.path.name
    else:
        ckpt = load_checkpoint(checkpoint, device, dtype, adapter)
        name = str(checkpoint) if str(checkpoint).startswith("hf:") else Path(checkpoint).resolve().name
    if ckpt.model.predicts != "tokens":
        raise ValueError(f"{ckpt.path} is a classifier: it writes no text to serve")
    root = resolve_root(media_root) if media_root is not None else None
    server = Server(ckpt, model_id or name, Engine(ckpt.model, ckpt.tokenizer, max_batch, max_queue), api_key,
                    limits or Limits(), root)

    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(server.engine.close)

    app = FastAPI(title="omnigpt", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(MeasureRequests, metrics=server.metrics)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return await api_error(request, APIError(exc.status_code, str(exc.detail), code=None,
                                                 headers=getattr(exc, "headers", None)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return await api_error(request, APIError(400, str(exc)))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        return await api_error(request, APIError(500, f"{type(exc).__name__}: {exc}", type="server_error"))

    @app.get("/", include_in_schema=False)
    async def playground():
        """The web playground: one static page that talks to the endpoints below (it asks for the key)."""
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"), headers=PLAYGROUND_HEADERS)

    @app.get("/health")
    async def health():
        return {"status": "ok", "running": server.engine.running, "waiting": server.engine.waiting}

    @app.get("/v1/models")
    async def models(request: Request):
        server.authorize(request)
        return {"object": "list", "data": [_model_card(server)]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        server.authorize(request)
        server.check_model(name)
        return _model_card(server)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        arrived = time.perf_counter()
        server.authorize(request)
        req = parse(ChatRequest, await read_json(request, server.limits.max_body_bytes))
        server.check_model(req.model)
        job = await run_in_threadpool(lambda: server.job(req, [server.chat_prompt(req.messages)], "messages"))
        return await server.answer(request, req, job, chat=True, arrived=arrived)

    @app.post("/v1/completions")
    async def completions(request: Request):
        arrived = time.perf_counter()
        server.authorize(request)
        req = parse(CompletionRequest, await read_json(request, server.limits.max_body_bytes))
        server.check_model(req.model)
        for i, p in enumerate(req.prompts()):
            Server._text(p, "prompt" if isinstance(req.prompt, str) else f"prompt.{i}")
        job = await run_in_threadpool(lambda: server.job(req, [(p, [], []) for p in req.prompts()], "prompt"))
        return await server.answer(request, req, job, chat=False, arrived=arrived)

    @app.post("/v1/audio/transcriptions")
    async def audio_transcriptions(request: Request):
        server.authorize(request)
        fields, data, filename = await read_form(request, server.limits.max_body_bytes)
        req = parse(TranscriptionRequest, fields)
        server.check_model(req.model)
        settings = transcriptions.options(req)
        wave = await run_in_threadpool(server.recording, data, filename)
        transcript = await server.run_in_engine(request, lambda: transcribe_steps(server.model, server.tokenizer,
                                                                                   wave, **settings))
        if transcript is None:  # the client went away
            return None
        server.metrics.transcribed(transcript.duration)
        return transcriptions.response(transcript, req, server.tokenizer)

    @app.get("/metrics")
    async def metrics(request: Request):
        server.authorize(request)
        text = server.metrics.render(server.engine.waiting, server.engine.running, server.engine.max_batch)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _model_card(server: Server) -> dict:
    """OpenAI's model object, and what a client (the playground) needs to know to build a request: the inputs
    the model takes, its context in tokens, and the rate and length of the clips it hears."""
    card = {"id": server.model_id, "object": "model", "created": server.created, "owned_by": "omnigpt",
            "inputs": sorted(server.model.accepts), "context_length": server.engine.context}
    if "audio" in server.model.accepts:
        hearing = server.model.audio_config
        card["sample_rate"] = hearing.sample_rate
        card["max_audio_seconds"] = min(server.limits.max_audio_seconds, hearing.max_seconds or float("inf"))
    return card


def serve(checkpoint: str | Path | Checkpoint, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve until interrupted (options: those of `create_app`)."""
    import uvicorn

    uvicorn.run(create_app(checkpoint, **options), host=host, port=port, log_level="info")
