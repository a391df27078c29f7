"""Precision on this machine: fp32 against bf16, measured, and what `train.precision: auto` picks here.

- matmul: a 1024x1024 matmul in fp32 and in bf16, GFLOP/s (median of --repeats after one warmup call).
- training step: `configs/text-tiny.yaml`'s GPT (4 x 256, byte vocabulary, block 256, batch 16), one step
  = forward + loss + backward + AdamW step, in fp32 and under bf16 autocast; tokens/s from the median step.
- peer: Hugging Face GPT-2 of the same shape (learned positions instead of RoPE), the same step in fp32, in
  the same run; `ratio_auto` is omnigpt at the precision auto picks over HF fp32.

On a CPU without native bf16 (AVX512-BF16 or AMX) bf16 is emulated: expect its matmul at a few GFLOP/s and
`auto` at fp32. Prints one JSON line on stdout; progress goes to stderr.

    python bench/precision.py                    # full run
    python bench/precision.py --steps 2 --repeats 2    # smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8, help="timed training steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps per variant")
    p.add_argument("--repeats", type=int, default=5, help="timed matmuls per dtype")
    p.add_argument("--size", type=int, default=1024, help="matmul side")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--config", default=str(ROOT / "configs" / "text-tiny.yaml"))
    return p.parse_args()


def matmul_gflops(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from omnigpt import GPT, Config
    from omnigpt.hardware import choose_precision, cpu_bf16_pays, cpu_bf16_slowdown
    from omnigpt.train.optim import build_optimizer
    from transformers import GPT2Config, GPT2LMHeadModel

    t0 = time.perf_counter()
    native = cpu_bf16_pays()
    detect_s = time.perf_counter() - t0
    auto = choose_precision("auto", "cpu")
    log(f"{cpu_name()}: bf16 pays {native} (detected in {detect_s * 1e3:.1f} ms); auto -> {auto.name}")
    fp32_gflops = matmul_gflops(torch.float32, args.size, args.repeats)
    bf16_gflops = matmul_gflops(torch.bfloat16, args.size, max(1, args.repeats if native else 2))
    log(f"matmul {args.size}: fp32 {fp32_gflops:.1f} GFLOP/s, bf16 {bf16_gflops:.1f} GFLOP/s")

    cfg = Config.load(args.config)
    m, t = cfg.model, cfg.train
    x = torch.randint(0, m.vocab_size, (t.batch_size, m.block_size))

    def omnigpt_step(autocast: contextlib.AbstractContextManager):
        model = GPT(m).train()
        opt = build_optimizer(model, t)

        def step() -> None:
            with autocast:
                _, loss = model(x, x)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=m.vocab_size, n_positions=m.block_size, n_embd=m.n_embd,
                                    n_layer=m.n_layer, n_head=m.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                                    attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)).train()
    hf_opt = torch.optim.AdamW(hf.parameters())

    def hf_step() -> None:
        hf(input_ids=x, labels=x).loss.backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    variants = {"fp32": omnigpt_step(contextlib.nullcontext()),
                "bf16": omnigpt_step(torch.autocast("cpu", dtype=torch.bfloat16)), "hf_fp32": hf_step}
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for i in range(args.warmup + args.steps):
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate the order every round
            s = time.perf_counter()
            variants[name]()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - s)
        log(f"step {i + 1}/{args.warmup + args.steps}")
    tokens = t.batch_size * m.block_size
    tps = {k: tokens / statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "bench": "precision", "cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "bf16_pays": native, "detect_ms": round(detect_s * 1e3, 1),
        "bf16_matmul_slowdown": round(cpu_bf16_slowdown(), 2), "auto": auto.name,
        "matmul_fp32_gflops": round(fp32_gflops, 1), "matmul_bf16_gflops": round(bf16_gflops, 1),
        "train_fp32_tokens_per_s": round(tps["fp32"], 1), "train_bf16_tokens_per_s": round(tps["bf16"], 1),
        "hf_fp32_tokens_per_s": round(tps["hf_fp32"], 1),
        "bf16_speedup": round(tps["bf16"] / tps["fp32"], 3),
        "ratio_auto": round(tps[auto.name if auto.name in tps else "fp32"] / tps["hf_fp32"], 3),
    }))


if __name__ == "__main__":
    main()
