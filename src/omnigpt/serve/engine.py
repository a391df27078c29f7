"""Continuous batching: one thread owns the model and advances every running request by one token per step.

Each running sequence (a request's prompt, or each of its `n` choices) owns one row of a shared KV cache,
`CachePool`: per decoder layer (rows, heads, block_size, head size). Rows are kept compact: the running
sequences hold rows 0..B-1, in order of arrival, so one decoding step is one forward pass over the view
`pool[:B]`. Rows differ in how much they hold: each step writes every row's new key and value at that row's
own length, gives each its own position, and masks the keys past it, so a row attends exactly what it
would alone. A new request's prompt is run alone (batch of one) into a free row between two steps and
joins the next step; a finished or cancelled row leaves at once and the rows after it move up.

Work that uses the model outside the rows (a transcription, `Engine.call`) waits in the same queue and runs
in the same thread between two steps, so nothing else ever runs the model at the same time. Long work comes as
a generator (`transcribe_steps`): the engine advances it one piece per step, and the rows go on decoding
between its pieces.

The prompt runs exactly as in `generate` (the same forward pass of one row), and a decoding step differs
from generating alone only by the masked padding keys, so a greedy request gives the same text in company
as alone (tests/unit/serve/test_engine.py checks 8 at once).
"""
from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from ..generate import GenerationConfig, _cut_at_stop, _stop_ids, _suppress, next_tokens
from ..model.attention import KVCache, MediaCache
from ..tokenizer import Tokenizer


class QueueFull(RuntimeError):
    """The engine holds max_queue requests waiting for a row: come back later."""


class EngineClosed(RuntimeError):
    """The engine has stopped: it takes no more requests."""


class CallCancelled(RuntimeError):
    """A call was stopped between two of its pieces because its client went away (`Engine.cancel`)."""


# -------------------------------------------------------------------------------------------- requests
@dataclass
class Prompt:
    """One prompt, tokenized with its placeholders expanded, and the media its forward pass reads."""
    ids: list[int]
    media: dict = field(default_factory=dict)


@dataclass
class Delta:
    index: int  # which choice: prompt p's choice i is p * n + i
    text: str


@dataclass
class Finished:
    index: int
    reason: str  # "stop" (end-of-text or a stop string) or "length" (max_new_tokens)
    tokens: int  # tokens generated, the end-of-text token included


@dataclass
class Failed:
    message: str


Event = Delta | Finished | Failed


@dataclass(eq=False)  # compared and hashed by identity
class Job:
    """A request: each prompt is continued n times under one GenerationConfig (choice i samples with
    seed + i). Events go to `on_event`, called from the engine's thread."""
    prompts: list[Prompt]
    config: GenerationConfig
    on_event: Callable[[Event], None]
    n: int = 1
    cancelled: bool = False

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n

    def cancel(self) -> None:
        """Stop generating (a client that went away): the rows leave at the next step."""
        self.cancelled = True


@dataclass
class Row:
    """One running sequence: its place in the pool, what it has generated and sent."""
    job: Job
    index: int
    slot: int
    length: int  # positions held in the cache; the next token fed goes there
    generator: Optional[torch.Generator]
    media: list  # the row's media caches (cross-attention), shared by the choices of one prompt
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the text already sent
    pending: Optional[int] = 0  # the last token chosen, fed at the next step; None once the row is done


# ------------------------------------------------------------------------------------------- the pool
class RowCache:
    """The KV cache of one pool row for a prompt's forward pass (a `KVCache` of batch 1 living in the pool)."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v, self.length = k, v, 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache full: {end} positions needed, {self.k.shape[2]} allocated")
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class StepCache:
    """The KV caches of rows 0..B-1 for one decoding step: row b's new key and value go to position
    at[b]; all keys up to `span` come back, and the step's mask hides those past each row's own."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, at: torch.Tensor, span: int):
        self.k, self.v, self.at, self.span = k, v, at, span
        self.rows = torch.arange(k.shape[0], device=k.device)

    @property
    def length(self) -> int:  # not 0: the model reads it to tell a prompt's pass from a decoding step
        return self.span - 1

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v (B, H, 1, D) -> all keys and values (B, H, span, D)."""
        self.k[self.rows, :, self.at] = k[:, :, 0]
        self.v[self.rows, :, self.at] = v[:, :, 0]
        return self.k[:, :, :self.span], self.v[:, :, :self.span]


class CachePool:
    """Keys and values of every running row, per decoder layer (rows, H, width, D); rows are allocated as
    needed (doubling) up to `max_rows`."""

    def __init__(self, like: Sequence[KVCache], width: int, max_rows: int):
        self.shapes = [(c.k.shape[1], c.k.shape[3]) for c in like]
        self.dtype, self.device = like[0].k.dtype, like[0].k.device
        self.width, self.max_rows = width, max_rows
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.rows = 0
        self.reserve(1)

    def reserve(self, rows: int) -> None:
        if rows <= self.rows:
            return
        rows = min(max(rows, 2 * self.rows), self.max_rows)
        k, v = [], []
        for layer, (h, d) in enumerate(self.shapes):
            k.append(torch.zeros(rows, h, self.width, d, dtype=self.dtype, device=self.device))
            v.append(torch.zeros_like(k[-1]))
            if self.rows:
                k[-1][:self.rows] = self.k[layer]
                v[-1][:self.rows] = self.v[layer]
        self.k, self.v, self.rows = k, v, rows

    def row(self, slot: int) -> list[RowCache]:
        return [RowCache(k[slot:slot + 1], v[slot:slot + 1]) for k, v in zip(self.k, self.v)]

    def step(self, batch: int, at: torch.Tensor, span: int) -> list[StepCache]:
        return [StepCache(k[:batch], v[:batch], at, span) for k, v in zip(self.k, self.v)]

    def copy(self, src: int, dst: int, length: int) -> None:
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]


def batched_media(caches: Sequence[MediaCache]) -> MediaCache:
    """Rows' media caches of one cross-attention layer as one, padded to the most media: padding (and a
    row without media) is never visible, and a row that sees nothing passes the layer unchanged."""
    out = MediaCache()
    filled = [c for c in caches if c.k is not None]
    if not filled:
        return out
    _, H, _, D = filled[0].k.shape
    M = max(c.k.shape[2] for c in filled)
    like = filled[0].k
    out.k = like.new_zeros(len(caches), H, M, D)
    out.v = like.new_zeros(len(caches), H, M, D)
    out.after = torch.zeros(len(caches), M, dtype=torch.bool, device=like.device)
    for b, c in enumerate(caches):
        if c.k is not None:
            m = c.k.shape[2]
            out.k[b, :, :m], out.v[b, :, :m], out.after[b, :m] = c.k[0], c.v[0], c.after[0]
    return out


# ----------------------------------------------------------------------------------------- the engine
class Engine:
    """Runs jobs on one model from a background thread, `max_batch` rows at a time; up to `max_queue`
    jobs wait for rows (more: `QueueFull`)."""

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, max_batch: int = 16, max_queue: int = 64):
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, got {max_batch} and {max_queue}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.context = model.config.block_size
        self.device = next(model.parameters()).device
        layout = model.new_caches(1, 1)
        self._kv_layers = sum(isinstance(c, KVCache) for c in layout)
        self._media_layers = len(layout) - self._kv_layers
        self.pool = CachePool(layout[:self._kv_layers], self.context, max_batch)
        self.suppress = torch.tensor(_suppress(model, tokenizer), dtype=torch.long, device=self.device)
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable, Future]] = deque()
        self._current: Optional[tuple[Generator, Future]] = None  # the call whose pieces are running
        self._leaving: set[Future] = set()  # running calls whose clients went away
        self._rows: list[Row] = []
        self._admitting = 0  # a job taken from the queue whose prefill has not finished: still counted waiting
        self._wake = threading.Condition()
        self._hold = threading.Lock()
        self._closed = False
        self.cancelled = 0  # jobs dropped, waiting or running, because their client went away
        self._thread = threading.Thread(target=self._run, name="omnigpt-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------------- interface
    def submit(self, job: Job) -> None:
        """Queue a job; it starts at the next step where enough rows are free."""
        if job.rows > self.max_batch:
            raise ValueError(f"{job.rows} sequences (prompts x n) do not fit max_batch {self.max_batch}")
        with self._wake:
            if self._closed:
                raise EngineClosed("the server is shutting down")
            self._check_room(job.rows)
            self._waiting.append(job)
            self._wake.notify()

    def call(self, work: Callable[[], object]) -> Future:
        """Queue `work()` to run in the engine's thread between two steps (it may use the model: nothing else
        does meanwhile); returns the future of its result. It waits in the queue like a job (`QueueFull`);
        cancelling the future before it starts drops it. When work() returns a generator, the engine runs it
        one `next()` per step, one such call at a time, and the future gets its return value."""
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise EngineClosed("the server is shutting down")
            self._check_room()
            self._calls.append((work, future))
            self._wake.notify()
        return future

    def cancel(self, future: Future) -> None:
        """Drop a call whose client went away: before it starts, or between two of its pieces (its future
        then fails with CallCancelled)."""
        if not future.cancel():
            with self._wake:
                if self._current is not None and self._current[1] is future:
                    self._leaving.add(future)

    def _check_room(self, rows: int = 0) -> None:
        """Raise QueueFull if taking this job (`rows` rows) or call (0) would leave more than max_queue requests
        waiting beyond those that start at the next step (the jobs whose rows are free, in order, and the first
        call). Those whose clients left make room first."""
        if self._queued(rows) > self.max_queue:
            kept = deque(j for j in self._waiting if not j.cancelled)
            calls = deque(c for c in self._calls if not c[1].cancelled())
            self.cancelled += self.waiting - len(kept) - len(calls)
            self._waiting, self._calls = kept, calls
        if self._queued(rows) > self.max_queue:
            raise QueueFull(f"{self.waiting} requests are waiting (max_queue {self.max_queue})")

    def _queued(self, rows: int) -> int:
        """Requests that would wait past the next step with one more of `rows` rows (0: a call)."""
        free, late = self.max_batch - len(self._rows), 0
        for need in [j.rows for j in self._waiting] + ([rows] if rows else []):
            if late or need > free:
                late += 1
            else:
                free -= need
        calls = len(self._calls) + (0 if rows else 1)
        return late + max(0, calls - (0 if self._current is not None else 1))

    @property
    def running(self) -> int:
        """Sequences being decoded. A row that has finished is not counted, though it stays in the batch until
        the end of the step: its client may already have the whole reply."""
        return sum(r.pending is not None for r in self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting) + len(self._calls) + self._admitting

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Pause the engine between two steps (requests still queue): for tests and maintenance."""
        with self._hold:
            yield

    def close(self) -> None:
        """Stop the thread; waiting and running jobs get `Failed`."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------------------------------ loop
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while (not self._closed and not self._waiting and not self._rows and not self._calls
                           and self._current is None):
                        self._wake.wait()
                    if self._closed:
                        break
                with self._hold:
                    self._admit()
                    self.cancelled += len({r.job for r in self._rows if r.job.cancelled})
                    self._drop(lambda r: r.job.cancelled)
                    if self._rows:
                        self._guarded(self._step, {r.job for r in self._rows})
                    self._call_one()
        for job in {r.job for r in self._rows} | set(self._waiting):
            if not job.cancelled:
                job.on_event(Failed("the server is shutting down"))
        if self._current is not None:
            self._current[0].close()
            self._current[1].set_exception(EngineClosed("the server is shutting down"))
        for _, future in self._calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineClosed("the server is shutting down"))

    def _call_one(self) -> None:
        """Run the first queued call, or the next piece of the running one (one per step, so that decoding
        goes on between long calls and between the pieces of a generator)."""
        if self._current is None:
            with self._wake:
                if not self._calls:
                    return
                work, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():  # its client went away before it started
                self.cancelled += 1
                return
            try:
                result = work()
            except Exception as exc:  # noqa: BLE001 - the caller gets it; the engine goes on
                future.set_exception(exc)
                return
            if not isinstance(result, Generator):
                future.set_result(result)
                return
            self._current = (result, future)
        pieces, future = self._current
        with self._wake:
            leaving = future in self._leaving
            self._leaving.discard(future)
        if leaving:
            pieces.close()
            self.cancelled += 1
            self._current = None
            future.set_exception(CallCancelled("the client went away"))
            return
        try:
            next(pieces)
        except StopIteration as done:
            self._current = None
            future.set_result(done.value)
        except Exception as exc:  # noqa: BLE001 - the caller gets it; the engine goes on
            self._current = None
            future.set_exception(exc)

    def _guarded(self, work: Callable, jobs: set) -> None:
        """Run work; on an error (out of memory, a bug) fail the jobs it touched, keep serving the others."""
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - reported to the clients, the engine goes on
            for job in jobs:
                job.cancel()
                job.on_event(Failed(f"{type(exc).__name__}: {exc}"))
            self._drop(lambda r: r.job in jobs)

    def _admit(self) -> None:
        """Start waiting jobs (first come, first served) while their rows fit."""
        while True:
            with self._wake:
                if not self._waiting:
                    return
                job = self._waiting[0]
                if not job.cancelled and len(self._rows) + job.rows > self.max_batch:
                    return
                self._waiting.popleft()
                self._admitting = 1
            try:
                if job.cancelled:
                    self.cancelled += 1
                else:
                    self._guarded(lambda: self._prefill(job), {job})
            finally:
                self._admitting = 0

    def _prefill(self, job: Job) -> None:
        """Run each prompt of the job alone into a free row; its choices copy that row."""
        cfg = job.config
        self.pool.reserve(len(self._rows) + job.rows)
        for p, prompt in enumerate(job.prompts):
            first = len(self._rows)
            media_caches = [MediaCache() for _ in range(self._media_layers)]
            ids = torch.tensor([prompt.ids], dtype=torch.long, device=self.device)
            logits, _ = self.model(ids, caches=self.pool.row(first) + media_caches, last_only=True, **prompt.media)
            for i in range(job.n):
                slot = first + i
                if i:
                    self.pool.copy(first, slot, len(prompt.ids))
                generator = None
                if cfg.temperature > 0:
                    generator = torch.Generator(device=self.device)
                    seed = cfg.seed + i if cfg.seed is not None else int(torch.randint(2 ** 62, ()).item())
                    generator.manual_seed(seed)
                row = Row(job, p * job.n + i, slot, len(prompt.ids), generator, media_caches)
                self._rows.append(row)
                self._admitting = 0  # counted as running from here (a reply may finish before admission ends)
                self._choose(row, logits[0, -1:])
        self._drop(lambda r: r.job is job and r.pending is None)

    def _step(self) -> None:
        """Feed every row its last token, all rows in one forward pass."""
        rows = self._rows
        B = len(rows)
        tok = torch.tensor([[r.pending] for r in rows], dtype=torch.long, device=self.device)
        at = torch.tensor([r.length for r in rows], dtype=torch.long, device=self.device)
        span = int(at.max()) + 1
        mask = (torch.arange(span, device=self.device)[None] <= at[:, None])[:, None, None, :]
        caches = self.pool.step(B, at, span)
        if self._media_layers:
            caches += [batched_media([r.media[j] for r in rows]) for j in range(self._media_layers)]
        logits, _ = self.model(tok, positions=at[:, None], mask=mask, caches=caches, last_only=True)
        for b, row in enumerate(rows):
            row.length += 1
            self._choose(row, logits[b, -1:])
        self._drop(lambda r: r.pending is None)

    def _choose(self, row: Row, logits: torch.Tensor) -> None:
        """Pick the row's next token from logits (1, V) and send the text it completes; a row that is
        done gets `pending = None`."""
        cfg = row.job.config
        if len(self.suppress):
            logits = logits.index_fill(1, self.suppress, float("-inf"))
        t = int(next_tokens(logits, cfg, _NOT_SEEN, row.generator)[0])
        if t in _stop_ids(self.tokenizer, cfg):
            return self._finish(row, "stop", self.tokenizer.decode(row.tokens), len(row.tokens) + 1)
        row.tokens.append(t)
        text = self.tokenizer.decode(row.tokens)
        cut, stopped = _cut_at_stop(text, cfg.stop_strings)
        if stopped:
            return self._finish(row, "stop", cut, len(row.tokens))
        if len(row.tokens) >= cfg.max_new_tokens:
            return self._finish(row, "length", text, len(row.tokens))
        row.pending = t
        hold = max((len(s) for s in cfg.stop_strings), default=1) - 1  # could be the start of a stop string
        safe = len(text.rstrip("\ufffd")) if text.endswith("\ufffd") else len(text)  # bytes of a character to come
        safe = min(safe, len(text) - hold)
        if safe > row.sent:
            row.job.on_event(Delta(row.index, text[row.sent:safe]))
            row.sent = safe

    def _finish(self, row: Row, reason: str, text: str, tokens: int) -> None:
        if len(text) > row.sent:
            row.job.on_event(Delta(row.index, text[row.sent:]))
        row.job.on_event(Finished(row.index, reason, tokens))
        row.pending = None

    def _drop(self, gone: Callable[[Row], bool]) -> None:
        """Remove rows; those after them move up in the pool, keeping rows 0..B-1 filled."""
        kept = [r for r in self._rows if not gone(r)]
        if len(kept) == len(self._rows):
            return
        for slot, row in enumerate(kept):
            if row.slot != slot:
                self.pool.copy(row.slot, slot, row.length)
                row.slot = slot
        self._rows = kept


_NOT_SEEN = torch.zeros(1, 1, dtype=torch.bool)  # no repetition penalty: next_tokens never reads it
