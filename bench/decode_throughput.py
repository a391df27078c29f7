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

Then real sizes, batch 1, imported from Hugging Face folders: a random-weight GPT2LMHeadModel of GPT-2 124M's
shape (12 layers, 12 heads, width 768, vocab 50257) and a LlamaForCausalLM of SmolLM2-135M's (30 layers, 9
heads, 3 kv heads, width 576, MLP 1536, vocab 49152, tied embeddings, rope theta 100000) are saved with
`save_pretrained` to a temporary folder; omnigpt loads each through `omnigpt.interop.decoder.load_decoder`,
transformers through `from_pretrained`. Per dtype (fp32 always; bf16 where the CPU computes it natively, as
`omnigpt.hardware` decides from /proc/cpuinfo; int8: `torch.ao.quantization.quantize_dynamic` on every
nn.Linear, weights int8 per output channel, activations quantized on the fly) both generate greedily, interleaved,
and the script reports ms per decoded token (first new token to last: prefill excluded, reported apart),
whether the greedy tokens agree, and the bound: every decode step reads all weights once (embedding tables
one row; a tied head all of it) and the KV cache, so a token cannot take less than
(weight bytes + KV bytes at the mean context) / read bandwidth, with the bandwidth measured here by timing a
sum over a large fp32 tensor with the same threads. HF's GPT-2 keeps its layers in Conv1D, which
quantize_dynamic does not touch: there only its head is int8.

Targets: ratio (batch 1, omnigpt tok/s / HF tok/s) >= 2.0 and ratio_b8 (batch 8) >= 1.5.

Prints one JSON line on stdout at the end; progress goes to stderr.

    python bench/decode_throughput.py                                # full run (~10 minutes on 2 cores)
    OMP_NUM_THREADS=2 python bench/decode_throughput.py --smoke      # every path, tiny sizes, seconds
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
    p.add_argument("--real-shapes", default=",".join(REAL_SHAPES), help="comma-separated: " + ", ".join(REAL_SHAPES))
    p.add_argument("--real-dtypes", default="fp32,bf16,int8",
                   help="fp32, bf16 (skipped where the CPU has no native bf16), int8 (weight int8, CPU only)")
    p.add_argument("--real-new-tokens", type=int, default=64, help="new tokens per generate call, real shapes")
    p.add_argument("--real-steps", type=int, default=3, help="timed generate calls per model, real shapes")
    p.add_argument("--real-layers", type=int, default=None, help="override the real shapes' depth (smoke tests)")
    p.add_argument("--skip-real", action="store_true", help="skip the real shapes")
    p.add_argument("--smoke", action="store_true",
                   help="every path at tiny sizes: 16 new tokens, 1 timed call, batch 1, real shapes 2 layers deep")
    p.add_argument("--bandwidth-mb", type=int, default=1024, help="size of the tensor summed for bandwidth")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.smoke:
        args.new_tokens, args.steps, args.batches = 16, 1, "1"
        args.real_new_tokens, args.real_steps, args.real_layers, args.bandwidth_mb = 8, 1, 2, 256
    return args


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


# ------------------------------------------------------------------------------------------- real sizes
# Hugging Face configs of the real shapes (random weights); eos None so that nothing stops early.
REAL_SHAPES = {
    "gpt2_124m": dict(model_type="gpt2", vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                      activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "smollm2_135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                         tie_word_embeddings=True, hidden_act="silu"),
}


def save_hf_model(shape: str, folder: str, layers: int | None, seed: int) -> dict:
    """A random-weight HF model of `shape` saved to `folder` (safetensors); returns its config as a dict."""
    from transformers import AutoConfig, AutoModelForCausalLM

    kw = dict(REAL_SHAPES[shape])
    kind = kw.pop("model_type")
    if layers:
        kw["n_layer" if kind == "gpt2" else "num_hidden_layers"] = layers
    cfg = AutoConfig.for_model(kind, **kw, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return cfg.to_dict()


def native_bf16(device: str) -> bool:
    """bf16 is timed only where it is computed natively (emulated bf16 runs 30-100x slower than fp32)."""
    from omnigpt import hardware

    if device.startswith("cuda"):
        return hardware._cuda_bf16(torch.device(device))
    flags = hardware._cpu_flags()
    return flags is None or any(f in flags for f in hardware.CPU_FLAGS)


def quantize_int8(model, omnigpt: bool):
    """Every nn.Linear to int8 weights (a scale per output channel) with activations quantized on the fly
    (fbgemm)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's notice that it moves to torchao
        model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    if omnigpt:
        # GPT.head multiplies by lm_head.weight itself, which a packed layer lacks: call the layer instead
        # (put in the instance's __dict__, since nn.Module would file a module under _modules, behind the method)
        model.__dict__["head"] = model.lm_head
    return model


def read_bytes(model) -> int:
    """Bytes a decode step reads of the weights: every parameter and packed int8 weight, except embedding
    tables (one row a step) unless a linear layer reads them too (a tied head)."""
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    in_linear = {id(p) for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    total = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values()
                if id(p) not in embedded or id(p) in in_linear)
    for m in model.modules():
        if hasattr(m, "_packed_params") and callable(getattr(m, "weight", None)):  # a dynamic int8 Linear
            w = m.weight()
            total += w.numel() * w.element_size() + (m.bias().numel() * 4 if m.bias() is not None else 0)
    return total


def kv_bytes(cfg, context: float, dtype: torch.dtype) -> float:
    """KV cache bytes read in a step at `context` cached positions (omnigpt ModelConfig)."""
    heads = cfg.n_kv_head or cfg.n_head
    element = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.n_layer * heads * (cfg.n_embd // cfg.n_head) * context * element


class Stamps:
    """A transformers streamer that notes when each put() arrives: the prompt first, then each new token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def hf_generate_stamped(model, prompt: list[int], new_tokens: int, device: str) -> tuple[torch.Tensor, list[float]]:
    """-> new tokens (1, N) and the wall time at which each new token arrived (batch 1)."""
    stamps = Stamps()
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
                         streamer=stamps)
    return out[:, ids.shape[1]:].cpu(), stamps.times[1:]


def decode_ms(t0: float, stamps: list[float]) -> tuple[float, float]:
    """(prefill ms: call to first new token, ms per decoded token after it)."""
    return (stamps[0] - t0) * 1e3, (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1) * 1e3


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """Index of the first differing new token, None when equal."""
    differ = (a != b).flatten().nonzero()
    return int(differ[0]) if len(differ) else None


def time_real_shape(shape: str, args, dtypes: list[str], bw: float, gen: torch.Generator) -> dict:
    """ms per decoded token, omnigpt and transformers, per dtype, for one real shape."""
    import tempfile

    from transformers import AutoModelForCausalLM
    from omnigpt.interop.decoder import load_decoder

    out: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        hf_cfg = save_hf_model(shape, folder, args.real_layers, args.seed)
        prompt = torch.randint(0, hf_cfg["vocab_size"], (args.prompt_len,), generator=gen).tolist()
        n = args.real_new_tokens
        reference = None  # omnigpt's fp32 tokens, to say how far int8 follows them
        for dtype_name in dtypes:
            dtype = torch.float32 if dtype_name in ("fp32", "int8") else torch.bfloat16
            om = load_decoder(folder, dtype).to(args.device)
            hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device).eval()
            if dtype_name == "int8":
                om, hf = quantize_int8(om, True), quantize_int8(hf, False)
            with torch.inference_mode():
                ids = torch.tensor([prompt], device=args.device)
                diff = (om(ids)[0].float() - hf(input_ids=ids).logits.float()).abs().max().item()
            runs = {"omnigpt": lambda om=om: omnigpt_generate(om, prompt, 1, n),
                    "hf": lambda hf=hf: hf_generate_stamped(hf, prompt, n, args.device)}
            ms: dict[str, list[float]] = {"omnigpt": [], "hf": []}
            prefill: dict[str, list[float]] = {"omnigpt": [], "hf": []}
            toks = {}
            for r in range(1 + args.real_steps):
                for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                    sync(args.device)
                    t0 = time.perf_counter()
                    toks[name], stamps = runs[name]()
                    pre, per = decode_ms(t0, stamps)
                    if r > 0:
                        ms[name].append(per)
                        prefill[name].append(pre)
                    log(f"{'warmup' if r == 0 else 'timed'} {r + 1}: {shape} {dtype_name} {name}: {per:.2f} ms/token "
                        f"(prefill {pre:.1f} ms)")
            weights = read_bytes(om)
            kv = kv_bytes(om.config, args.prompt_len + n / 2, dtype)
            bound = (weights + kv) / (bw * 1e9) * 1e3
            row = {"omnigpt_ms": round(statistics.median(ms["omnigpt"]), 2), "hf_ms": round(statistics.median(ms["hf"]), 2),
                   "bound_ms": round(bound, 2)}
            row["omnigpt_vs_bound"] = round(row["omnigpt_ms"] / bound, 2)
            row["hf_vs_bound"] = round(row["hf_ms"] / bound, 2)
            row["hf_over_omnigpt"] = round(row["hf_ms"] / row["omnigpt_ms"], 2)
            row.update(omnigpt_prefill_ms=round(statistics.median(prefill["omnigpt"]), 1),
                       hf_prefill_ms=round(statistics.median(prefill["hf"]), 1),
                       weight_mb=round(weights / 1e6, 1), kv_mb=round(kv / 1e6, 2),
                       max_logit_diff=float(f"{diff:.3g}"))
            mismatch = first_difference(toks["omnigpt"], toks["hf"])
            row["tokens_match"] = mismatch is None
            if mismatch is not None:
                row["first_mismatch"] = mismatch
            if dtype_name == "fp32":
                reference = toks["omnigpt"]
            elif reference is not None:
                same = first_difference(toks["omnigpt"], reference)
                row["same_tokens_as_fp32"] = n if same is None else same  # leading tokens equal to fp32's
            out[dtype_name] = row
            log(f"{shape} {dtype_name}: {row}")
            del om, hf
    return out


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
            runs = [("omnigpt", lambda B=B: omnigpt_generate(om, prompt, B, args.new_tokens)[0]),
                    ("hf", lambda B=B, hf=hf: hf_generate(hf, prompt, B, args.new_tokens, args.device))]
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

    if not args.skip_real:
        bw = measure_bandwidth(args.bandwidth_mb, args.device)
        log(f"read bandwidth {bw:.1f} GB/s")
        dtypes = [d for d in args.real_dtypes.split(",") if d.strip()]
        bf16 = native_bf16(args.device)
        if "bf16" in dtypes and not bf16:
            log("bf16 skipped: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag)")
            dtypes.remove("bf16")
        if "int8" in dtypes and args.device != "cpu":
            dtypes.remove("int8")  # quantize_dynamic's kernels are CPU-only
        real = {shape: time_real_shape(shape, args, dtypes, bw, gen) for shape in args.real_shapes.split(",")
                if shape.strip()}
        result["real"] = real
        if "fp32" in real.get("gpt2_124m", {}):
            g = real["gpt2_124m"]["fp32"]
            result.update(gpt2_124m_ms_per_token=g["omnigpt_ms"], gpt2_124m_bound_ms=g["bound_ms"],
                          gpt2_124m_vs_bound=g["omnigpt_vs_bound"])
        result.update(bandwidth_gb_s=round(bw, 2), bf16_native=bf16, real_new_tokens=args.real_new_tokens,
                      real_layers=args.real_layers)

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
