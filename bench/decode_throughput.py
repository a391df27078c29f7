"""Decode throughput: omnigpt's greedy generation against Hugging Face GPT-2 `generate`, new tokens per second.

Shape (defaults): GPT-2 layout (learned positions, biases, tied embeddings), n_layer 6, n_head 6, n_embd 384,
vocab 8192, block_size 512. Prompt of 32 random tokens, 256 new tokens, greedy, KV cache on both sides:

- omnigpt: consume `omnigpt.generate.sample_ids(model, [prompt] * B, GenerationConfig(max_new_tokens=N),
           stop_ids=[], pad_id=0)`, which yields one (B,) tensor per step
- HF:      `GPT2LMHeadModel.generate(ids, attention_mask=ones, max_new_tokens=N, min_new_tokens=N,
           do_sample=False, use_cache=True, pad_token_id=0)`

omnigpt's random weights are copied into the HF model (HF's Conv1D stores the transposed Linear weight), so both
compute the same function; the script reports the largest logit difference on the prompt and whether the
greedy tokens agree (`tokens_match`). Batch sizes 1 and 8 run interleaved (omnigpt, HF, and the order flips
every repeat); the median over the timed repeats gives tokens/s = B * N / time, prefill included.

Then, for the GPT-2 124M shape (n_layer 12, n_head 12, n_embd 768, vocab 50257, block 1024; omnigpt only,
batch 1) it measures ms per decoded token (prefill excluded) beside the memory bound: every decode step reads
all weights once, so it cannot beat weight_bytes / memory bandwidth, with the bandwidth measured here by
timing a sum over a large fp32 tensor with the same threads.

Targets: ratio (batch 1, omnigpt tok/s / HF tok/s) >= 2.0 and ratio_b8 (batch 8) >= 1.5.

Prints one JSON line on stdout at the end; progress goes to stderr.

    python bench/decode_throughput.py                                          # full run
    OMP_NUM_THREADS=2 python bench/decode_throughput.py --new-tokens 16 --steps 1 --gpt2-new-tokens 8   # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed generate calls per model and batch size")
    p.add_argument("--warmup", type=int, default=1, help="untimed generate calls per model and batch size")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (1 and 8 give ratio, ratio_b8)")
    p.add_argument("--n-layer", type=int, default=6)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--n-embd", type=int, default=384)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--block", type=int, default=512)
    p.add_argument("--gpt2-new-tokens", type=int, default=64, help="new tokens for the GPT-2 124M part")
    p.add_argument("--gpt2-steps", type=int, default=3, help="timed generate calls for the GPT-2 124M part")
    p.add_argument("--skip-gpt2", action="store_true", help="skip the GPT-2 124M part")
    p.add_argument("--bandwidth-mb", type=int, default=1024, help="size of the tensor summed for bandwidth")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ models
def omnigpt_model(vocab: int, block: int, n_layer: int, n_head: int, n_embd: int, device: str):
    from omnigpt import GPT, ModelConfig

    cfg = ModelConfig(vocab_size=vocab, block_size=block, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                      dropout=0.0, position="learned", bias=True, tie_embeddings=True, mlp_ratio=4,
                      norm_eps=1e-5)
    return GPT(cfg).to(device).eval()


def hf_model_like(om, device: str):
    """A GPT2LMHeadModel of omnigpt model `om`'s shape holding the same weights; returns (model, attn impl)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = om.config
    shape = dict(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                 n_head=c.n_head, n_inner=c.mlp_ratio * c.n_embd, activation_function="gelu_new",
                 layer_norm_epsilon=c.norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                 tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    try:
        hf = GPT2LMHeadModel(GPT2Config(**shape, attn_implementation="sdpa"))
    except (TypeError, ValueError, ImportError):  # a transformers without sdpa for GPT-2
        hf = GPT2LMHeadModel(GPT2Config(**shape))
    impl = getattr(hf.config, "_attn_implementation", None) or "eager"
    hf.load_state_dict(gpt2_state_dict(om), strict=True)
    return hf.to(device).eval(), impl


def gpt2_state_dict(om) -> dict[str, torch.Tensor]:
    """omnigpt's parameters under GPT-2's names. Conv1D keeps (in, out) where nn.Linear keeps (out, in)."""
    sd = {"transformer.wte.weight": om.wte.weight, "transformer.wpe.weight": om.wpe.weight}
    pairs = [("ln_1", "ln_1", False), ("attn.c_attn", "attn.qkv", True), ("attn.c_proj", "attn.proj", True),
             ("ln_2", "ln_2", False), ("mlp.c_fc", "mlp.fc", True), ("mlp.c_proj", "mlp.proj", True)]
    for i, block in enumerate(om.blocks):
        for hf_name, om_name, transpose in pairs:
            mod = block.get_submodule(om_name)
            sd[f"transformer.h.{i}.{hf_name}.weight"] = mod.weight.t() if transpose else mod.weight
            sd[f"transformer.h.{i}.{hf_name}.bias"] = mod.bias
    sd["transformer.ln_f.weight"] = om.ln_f.weight
    sd["transformer.ln_f.bias"] = om.ln_f.bias
    sd["lm_head.weight"] = om.lm_head.weight
    return {k: v.detach().contiguous() for k, v in sd.items()}


# -------------------------------------------------------------------------------------------- generation
def omnigpt_generate(model, prompt: list[int], batch: int, new_tokens: int) -> tuple[torch.Tensor, list[float]]:
    """-> new tokens (B, N) and the wall time at which each step's tokens arrived."""
    from omnigpt.generate import GenerationConfig, sample_ids

    toks, stamps = [], []
    for tok in sample_ids(model, [prompt] * batch, GenerationConfig(max_new_tokens=new_tokens), stop_ids=[],
                          pad_id=0):
        toks.append(tok)
        stamps.append(time.perf_counter())
    return torch.stack(toks, 1).cpu(), stamps


def hf_generate(model, prompt: list[int], batch: int, new_tokens: int, device: str) -> torch.Tensor:
    ids = torch.tensor([prompt] * batch, dtype=torch.long, device=device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0)
    return out[:, ids.shape[1]:].cpu()


def timed(fn, device: str):
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - t0, result


# ------------------------------------------------------------------------------------------- bandwidth
def measure_bandwidth(mb: int, device: str, repeats: int = 5) -> float:
    """Read bandwidth in GB/s: the best of `repeats` sums over an fp32 tensor of `mb` MiB."""
    x = torch.ones(mb * 2**20 // 4, dtype=torch.float32, device=device)
    x.sum()  # touch every page once before timing
    best = float("inf")
    for _ in range(repeats):
        dt, _ = timed(lambda: float(x.sum()), device)
        best = min(best, dt)
    return x.numel() * 4 / best / 1e9


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import transformers
        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    torch.manual_seed(args.seed)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.prompt_len + args.new_tokens > args.block:
        raise SystemExit(f"prompt {args.prompt_len} + new tokens {args.new_tokens} exceed block {args.block}")

    om = omnigpt_model(args.vocab, args.block, args.n_layer, args.n_head, args.n_embd, args.device)
    hf, hf_impl = hf_model_like(om, args.device)
    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, args.vocab, (args.prompt_len,), generator=gen).tolist()
    log(f"shape: n_layer {args.n_layer}, n_head {args.n_head}, n_embd {args.n_embd}, vocab {args.vocab}, "
        f"block {args.block}; prompt {args.prompt_len}, new tokens {args.new_tokens}, batches {batches}, "
        f"threads {torch.get_num_threads()}, hf attention {hf_impl}")

    # Same function? Compare the logits of the prompt, then the greedy tokens of the first (warm-up) calls.
    with torch.inference_mode():
        ids = torch.tensor([prompt], device=args.device)
        diff = (om(ids)[0] - hf(input_ids=ids).logits).abs().max().item()
    log(f"max |logit difference| on the prompt: {diff:.3g}")

    times: dict[tuple[str, int], list[float]] = {}
    match: dict[int, bool] = {}
    first_mismatch: dict[int, int] = {}
    for B in batches:
        times[("omnigpt", B)], times[("hf", B)] = [], []
    for r in range(args.warmup + args.steps):
        for B in batches:
            runs = [("omnigpt", lambda: omnigpt_generate(om, prompt, B, args.new_tokens)[0]),
                    ("hf", lambda: hf_generate(hf, prompt, B, args.new_tokens, args.device))]
            if r % 2:
                runs.reverse()
            out = {}
            for name, fn in runs:
                dt, out[name] = timed(fn, args.device)
                if r >= args.warmup:
                    times[(name, B)].append(dt)
                log(f"{'warmup' if r < args.warmup else 'timed'} {r + 1}: batch {B} {name}: {dt:.3f}s "
                    f"({B * args.new_tokens / dt:.1f} tok/s)")
            if r == 0:
                same = out["omnigpt"].shape == out["hf"].shape and bool((out["omnigpt"] == out["hf"]).all())
                match[B] = same
                if not same:
                    cols = (out["omnigpt"] != out["hf"]).any(0).nonzero()
                    first_mismatch[B] = int(cols[0]) if len(cols) else -1
                    log(f"batch {B}: greedy tokens differ, first at new token {first_mismatch[B]}")

    tps = {k: k[1] * args.new_tokens / statistics.median(v) for k, v in times.items() if v}
    result = {"bench": "decode_throughput"}
    for B in batches:
        result[f"omnigpt_b{B}_tokens_per_s"] = round(tps[("omnigpt", B)], 1)
        result[f"hf_b{B}_tokens_per_s"] = round(tps[("hf", B)], 1)
    if 1 in batches:
        result["ratio"] = round(tps[("omnigpt", 1)] / tps[("hf", 1)], 3)
    if 8 in batches:
        result["ratio_b8"] = round(tps[("omnigpt", 8)] / tps[("hf", 8)], 3)
    result["tokens_match"] = all(match.values())
    if first_mismatch:
        result["first_mismatch"] = {str(b): i for b, i in first_mismatch.items()}
    result["max_logit_diff"] = float(f"{diff:.3g}")
    del hf

    if not args.skip_gpt2:
        # GPT-2 124M: omnigpt only, batch 1. Decode steps only: from the first token (after prefill) to the last.
        g = omnigpt_model(50257, 1024, 12, 12, 768, args.device)
        n = args.gpt2_new_tokens
        g_prompt = torch.randint(0, 50257, (args.prompt_len,), generator=gen).tolist()
        per_token = []
        for r in range(1 + args.gpt2_steps):
            _, stamps = omnigpt_generate(g, g_prompt, 1, n)
            ms = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1) * 1e3
            log(f"{'warmup' if r == 0 else 'timed'} {r + 1}: gpt2-124m batch 1: {ms:.2f} ms/token")
            if r > 0:
                per_token.append(ms)
        unique = {id(p): p for name, p in g.named_parameters() if not name.startswith("wpe")}
        weight_bytes = sum(p.numel() * p.element_size() for p in unique.values())  # wpe: one row per step
        del g
        bw = measure_bandwidth(args.bandwidth_mb, args.device)
        bound_ms = weight_bytes / (bw * 1e9) * 1e3
        log(f"bandwidth {bw:.1f} GB/s, weights {weight_bytes / 1e6:.0f} MB -> bound {bound_ms:.2f} ms/token")
        result.update({
            "gpt2_124m_ms_per_token": round(statistics.median(per_token), 3),
            "gpt2_124m_bound_ms": round(bound_ms, 3),
            "gpt2_124m_vs_bound": round(statistics.median(per_token) / bound_ms, 2),
            "gpt2_124m_weight_mb": round(weight_bytes / 1e6, 1),
            "bandwidth_gb_s": round(bw, 2),
        })

    result.update({
        "new_tokens": args.new_tokens,
        "prompt_len": args.prompt_len,
        "steps": args.steps,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "hf_attn": hf_impl,
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    })
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
