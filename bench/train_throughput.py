"""Training throughput: omnigpt against Hugging Face GPT-2 of the same shape, tokens per second.

Shape (defaults): n_layer 6, n_head 6, n_embd 384, context 256, batch 8, vocab 8192, no dropout, learned
positions, tied embeddings. One "step" is forward + loss + backward + AdamW step + zero_grad, the same for
every variant:

- omnigpt fp32:  `GPT(ModelConfig(...))`, loss from `model(x, y)`, `build_optimizer(model, TrainConfig())`
- HF fp32:       `GPT2LMHeadModel(GPT2Config(...))` (sdpa attention when supported), loss from
                 `model(input_ids=x, labels=x)` (HF's own loss path), `torch.optim.AdamW(model.parameters())`
- omnigpt bf16:  as omnigpt fp32, forward under `torch.autocast(device, dtype=torch.bfloat16)`
- omnigpt bf16 + torch.compile (only with --compile)

The variants run interleaved step by step in one process (the order rotates every step, so none always
runs first or after the same neighbour), the first --warmup steps of each are dropped, and the median of the
remaining per-step times gives tokens/s = batch * block / median step time.

Targets: ratio (omnigpt fp32 / HF fp32) >= 1.25 and ratio_bf16 (omnigpt bf16 / HF fp32) >= 2.0.

Prints one JSON line on stdout at the end; progress goes to stderr.

    python bench/train_throughput.py                    # full run
    OMP_NUM_THREADS=2 python bench/train_throughput.py --steps 3 --warmup 1    # smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable

import torch


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also time omnigpt bf16 under torch.compile")
    p.add_argument("--no-bf16", action="store_true", help="skip the omnigpt bf16 variant")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_omnigpt(args: argparse.Namespace):
    from omnigpt import GPT, ModelConfig, TrainConfig
    from omnigpt.train.optim import build_optimizer

    cfg = ModelConfig(vocab_size=args.vocab, block_size=args.block, n_layer=args.n_layer, n_head=args.n_head,
                      n_embd=args.n_embd, dropout=0.0, position="learned")
    model = GPT(cfg).to(args.device).train()
    opt = build_optimizer(model, TrainConfig())
    return model, opt


def build_hf(args: argparse.Namespace):
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = dict(vocab_size=args.vocab, n_positions=args.block, n_embd=args.n_embd, n_layer=args.n_layer,
                 n_head=args.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                 bos_token_id=None, eos_token_id=None)
    try:
        model = GPT2LMHeadModel(GPT2Config(**shape, attn_implementation="sdpa"))
    except (TypeError, ValueError, ImportError):  # a transformers without sdpa for GPT-2
        model = GPT2LMHeadModel(GPT2Config(**shape))
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    model = model.to(args.device).train()
    opt = torch.optim.AdamW(model.parameters())
    return model, opt, impl


def make_step(model, opt, loss_fn: Callable, autocast: contextlib.AbstractContextManager | None):
    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with (autocast if autocast is not None else contextlib.nullcontext()):
            loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev_type = torch.device(args.device).type

    variants: dict[str, Callable] = {}
    log(f"building models: n_layer {args.n_layer}, n_head {args.n_head}, n_embd {args.n_embd}, "
        f"block {args.block}, batch {args.batch}, vocab {args.vocab}, threads {torch.get_num_threads()}")

    om_model, om_opt = build_omnigpt(args)
    variants["omnigpt"] = make_step(om_model, om_opt, lambda m, x, y: m(x, y)[1], None)

    hf_model, hf_opt, hf_impl = build_hf(args)
    variants["hf"] = make_step(hf_model, hf_opt, lambda m, x, y: m(input_ids=x, labels=x).loss, None)

    # Each variant owns its model and optimizer, so one variant's updates never change another's work.
    if not args.no_bf16:
        bf_model, bf_opt = build_omnigpt(args)
        variants["omnigpt_bf16"] = make_step(bf_model, bf_opt, lambda m, x, y: m(x, y)[1],
                                             torch.autocast(dev_type, dtype=torch.bfloat16))
    if args.compile:
        cm_model, cm_opt = build_omnigpt(args)
        compiled = torch.compile(cm_model)
        variants["omnigpt_bf16_compile"] = make_step(compiled, cm_opt, lambda m, x, y: m(x, y)[1],
                                                     torch.autocast(dev_type, dtype=torch.bfloat16))

    n_om = sum(p.numel() for p in {id(p): p for p in om_model.parameters()}.values())
    n_hf = sum(p.numel() for p in {id(p): p for p in hf_model.parameters()}.values())
    log(f"parameters: omnigpt {n_om:,}  hf {n_hf:,}  (hf attention: {hf_impl})")

    gen = torch.Generator().manual_seed(args.seed)
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, float] = {}
    total = args.warmup + args.steps
    for i in range(total):
        # One batch per step, shared by every variant.
        data = torch.randint(0, args.vocab, (args.batch, args.block + 1), generator=gen)
        x = data[:, :-1].contiguous().to(args.device)
        y = data[:, 1:].contiguous().to(args.device)
        k = i % len(names)
        order = names[k:] + names[:k]
        last: dict[str, float] = {}
        for name in order:
            sync(args.device)
            t0 = time.perf_counter()
            loss = variants[name](x, y)
            loss = float(loss)  # forces the step to finish
            sync(args.device)
            dt = time.perf_counter() - t0
            last[name] = dt
            if i >= args.warmup:
                times[name].append(dt)
            losses[name] = loss
        tag = "warmup" if i < args.warmup else "timed"
        log(f"step {i + 1}/{total} ({tag}): " + "  ".join(f"{n} {last[n]:.3f}s" for n in names))

    tokens = args.batch * args.block
    tps = {n: tokens / statistics.median(t) for n, t in times.items()}
    out = {
        "bench": "train_throughput",
        "omnigpt_tokens_per_s": round(tps["omnigpt"], 1),
        "hf_tokens_per_s": round(tps["hf"], 1),
        "omnigpt_bf16_tokens_per_s": round(tps["omnigpt_bf16"], 1) if "omnigpt_bf16" in tps else None,
        "ratio": round(tps["omnigpt"] / tps["hf"], 3),
        "ratio_bf16": round(tps["omnigpt_bf16"] / tps["hf"], 3) if "omnigpt_bf16" in tps else None,
    }
    if args.compile:
        out["omnigpt_bf16_compile_tokens_per_s"] = round(tps["omnigpt_bf16_compile"], 1)
        out["ratio_bf16_compile"] = round(tps["omnigpt_bf16_compile"] / tps["hf"], 3)
    out.update({
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "shape": {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd, "block": args.block,
                  "batch": args.batch, "vocab": args.vocab},
        "hf_attn": hf_impl,
        "last_loss": {n: round(v, 4) for n, v in losses.items()},
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    })
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
