"""Serving under load: many streaming clients of `omnigpt serve` on loopback, against the same server answering
one request at a time.

The server runs as its own process (`omnigpt serve`, the shipped defaults --max-batch 16 --max-queue 64) on the
demo's model: a trained run given with --checkpoint, else omni-tiny (configs/omni-tiny.yaml) with untrained
weights and a BPE fitted to built-in scene texts, whose replies run to max_tokens so that every request costs
the same. Requests are streamed chat completions, a third each of text, a built-in scene image with a question,
and a two-second sound with "transcript:".

First one client sends requests one after another for --serial-seconds (one-request-at-a-time serving); then
--clients clients each send requests back to back for --seconds. Prints one JSON line: errors (any non-200,
error event, missing usage or dropped stream), time to first token (p50/p99, ms, from sending the request to
its first piece of text), completion tokens per second of each phase and their ratio, and the server's peak
resident memory. Progress goes to stderr.

    python bench/serve_load.py                                   # 64 clients for 60 s
    python bench/serve_load.py --clients 8 --seconds 5 --serial-seconds 5   # a quick check
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def untrained_demo_model(folder: Path) -> Path:
    """omni-tiny with its initial weights and a BPE over built-in scene texts, saved as a checkpoint folder."""
    import torch

    from omnigpt import Config, Tokenizer
    from omnigpt.checkpoint import save_checkpoint
    from omnigpt.data.builtin.scenes import scenes
    from omnigpt.model.omni import build_model

    cfg = Config.load(ROOT / "src/omnigpt/configs/omni-tiny.yaml")
    texts = [s.caption + " " + " ".join(f"{q.question} {q.answer}" for q in s.qas) for s in scenes("train", 2000)]
    tok = Tokenizer.train_bpe(texts, vocab_size=cfg.model.vocab_size)
    torch.manual_seed(0)
    model = build_model(cfg, tok.image_id, tok.audio_id, tokenizer=tok)
    return save_checkpoint(folder, 0, model, cfg, tok)


def requests(model: str, max_tokens: int) -> list[dict]:
    """A cycle of bodies: text, an image with a question, a sound to transcribe."""
    import soundfile as sf

    from omnigpt.data.builtin.scenes import scenes

    bodies = []
    for i, s in enumerate(scenes("test", 6, seed=1)):
        picture = io.BytesIO()
        s.image.save(picture, format="PNG")
        t = np.arange(32000) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (200 + 40 * i + 300 * t) * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
        clip = io.BytesIO()
        sf.write(clip, tone.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
        for content in (f"Tell me about the {s.objects[0].shape if s.objects else 'scene'}.",
                        [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                             + base64.b64encode(picture.getvalue()).decode()}},
                         {"type": "text", "text": s.qas[0].question if s.qas else "caption:"}],
                        [{"type": "input_audio", "input_audio": {"data": base64.b64encode(clip.getvalue()).decode(),
                                                                 "format": "wav"}},
                         {"type": "text", "text": "transcript:"}]):
            bodies.append({"model": model, "messages": [{"role": "user", "content": content}], "stream": True,
                           "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
                           "temperature": 0.8, "seed": i})
    return bodies


async def one(client: httpx.AsyncClient, body: dict, record: list) -> None:
    """Send one streamed request; append (ttft seconds or None, completion tokens, error or None)."""
    sent = time.perf_counter()
    first, tokens, error = None, None, None
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
            else:
                done = False
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        error = chunk["error"].get("message", "error event")
                        break
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
                    if first is None and any(c.get("delta", {}).get("content") for c in chunk["choices"]):
                        first = time.perf_counter() - sent
                if error is None and (not done or tokens is None):
                    error = "the stream ended without usage and [DONE]"
    except (httpx.HTTPError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    record.append((first, tokens or 0, error))


async def phase(url: str, bodies: list[dict], clients: int, seconds: float) -> dict:
    """`clients` clients sending requests back to back until `seconds` have passed; every request that started
    finishes. Tokens per second over the whole time, until the last one finished."""
    record: list = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(300.0), limits=limits) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def loop(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                await one(client, bodies[i % len(bodies)], record)
                i += clients

        await asyncio.gather(*(loop(k) for k in range(clients)))
        elapsed = time.perf_counter() - start
    ttft = sorted(f for f, _, e in record if e is None and f is not None)
    errors = [e for _, _, e in record if e is not None]
    tokens = sum(t for _, t, e in record if e is None)
    pick = (lambda q: round(1000 * ttft[min(len(ttft) - 1, int(q * len(ttft)))], 1)) if ttft else (lambda q: None)
    return {"clients": clients, "requests": len(record), "errors": len(errors), "first_errors": errors[:3],
            "seconds": round(elapsed, 1), "completion_tokens": tokens, "tokens_per_s": round(tokens / elapsed, 1),
            "ttft_p50_ms": pick(0.5), "ttft_p99_ms": pick(0.99)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="a trained run or checkpoint (default: omni-tiny, untrained)")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60.0, help="of the concurrent phase")
    ap.add_argument("--serial-seconds", type=float, default=20.0, help="of one request at a time")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="the server's torch threads")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.checkpoint) if args.checkpoint else untrained_demo_model(Path(tmp) / "omni-tiny")
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        server = subprocess.Popen(
            [sys.executable, "-c", "from omnigpt.cli import main; main()", "serve", "--checkpoint", str(folder),
             "--port", str(port), "--name", "demo", "--max-batch", str(args.max_batch), "--max-queue",
             str(args.max_queue), "--device", "cpu"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    sys.exit(f"the server exited with {server.returncode}")
                time.sleep(0.2)
            bodies = requests("demo", args.max_tokens)
            asyncio.run(phase(url, bodies, 2, 2.0))  # warm up: first-call costs out of the measurement
            print(f"one request at a time for {args.serial_seconds:.0f} s ...", file=sys.stderr)
            serial = asyncio.run(phase(url, bodies, 1, args.serial_seconds))
            print(f"{args.clients} clients for {args.seconds:.0f} s ...", file=sys.stderr)
            loaded = asyncio.run(phase(url, bodies, args.clients, args.seconds))
            rss = peak_rss_mb(server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(json.dumps({
        "bench": "serve_load", "checkpoint": args.checkpoint or "omni-tiny (untrained)",
        "max_batch": args.max_batch, "max_queue": args.max_queue, "max_tokens": args.max_tokens,
        "threads": args.threads, "concurrent": loaded, "one_at_a_time": serial,
        "ratio": round(loaded["tokens_per_s"] / serial["tokens_per_s"], 2) if serial["tokens_per_s"] else None,
        "server_peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
