"""The training loop: data, model, AdamW, schedule, accumulation, clipping, precision, validation, checkpoints.

The same code runs as one process (`omnigpt pretrain`) or several (`torchrun --nproc_per_node=N -m
omnigpt.cli pretrain ...`): each process takes its slice of every step's global batch, so the loss of a
run does not depend on how many processes share it.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import hardware
from ..atomic import write_atomic, write_error
from ..checkpoint import (is_pretrained_folder, list_checkpoints, load_weights, read_weights, resolve, save_checkpoint,
                          weight_shapes)
from ..interop.decoder import load_decoder, model_config
from ..interop.folder import read_config
from ..interop.hub import local_folder
from ..tokenizer import Tokenizer
from ..config import Config, ConfigError, TrainConfig
from ..hardware import DTYPES, Precision, choose_precision
from ..model.lora import apply_lora, save_adapter
from ..model.omni import build_model
from . import distributed
from ..data.training import TrainingData
from .data import prepare
from .optim import build_optimizer, learning_rate, set_learning_rate
from .state import load_trainer_state, optimizer_from_tensors, optimizer_to_tensors, save_trainer_state


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    train_loss: float
    val_loss: Optional[float]
    checkpoint: Optional[Path]
    seconds: float
    precision: str = "fp32"  # what train.precision resolved to on this machine
    shortfall: Optional[str] = None  # set when a time budget ended with far fewer steps than the recipe expects


def _gather_rng(env: distributed.DistEnv) -> dict[str, torch.Tensor]:
    """RNG states of all processes, keyed `rank{r}.rng...` (collected on every process, kept by rank 0)."""
    mine = rng_state()
    states = [mine] * env.world_size
    if env.enabled:
        states = [None] * env.world_size
        torch.distributed.all_gather_object(states, {k: v.cpu() for k, v in mine.items()})
    return {f"rank{r}.{k}": v for r, s in enumerate(states) for k, v in s.items()}


def _rank_rng(tensors: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    prefix = f"rank{rank}."
    mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not mine:
        raise ConfigError(f"the checkpoint has no random state for process {rank}: resume with the number of "
                          f"processes that wrote it")
    return mine


def rng_state() -> dict[str, torch.Tensor]:
    """This process's CPU generator and, on a GPU, its own device's generator."""
    state = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["rng.cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


@torch.no_grad()
def validation_loss(model: nn.Module, data: TrainingData, batches: int, batch_size: int,
                    autocast: contextlib.AbstractContextManager, device: str, task: Optional[str] = None) -> float:
    """Mean loss over a fixed set of validation batches (of one task's source, when named)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(batches):
        batch = data.val_batch(i, batch_size) if task is None else data.val_batch(i, batch_size, task)
        with autocast:
            _, loss = model(**batch.to(device).model_inputs(loss_only=True))
        total += float(loss)
    model.train(was_training)
    return total / batches


def run_precision(requested: str, env: distributed.DistEnv, recorded: Optional[dict] = None) -> Precision:
    """The precision a run trains in. A resumed run keeps the one it trained in (`recorded`, from its trainer
    state) when it resumes on the same kind of device and asks for auto or that same precision (a resume from
    the command line reads the chosen name from the checkpoint's config.yaml); on another kind of device it is
    chosen anew. Under torchrun only the main process chooses (the choice rests on a timing, which processes
    sharing the cores would disturb in each other) and the others take its choice."""
    if not env.is_main:
        names = list(DTYPES)
        return Precision(names[int(distributed.shared(0.0, env))], "the main process's choice")
    here = torch.device(env.device).type
    if recorded and requested in ("auto", recorded["name"]):
        if recorded["device"] == here:
            precision = Precision(recorded["name"], f"the run being resumed trained in {recorded['name']}")
        else:
            chosen = choose_precision("auto", env.device)
            precision = Precision(chosen.name, f"{chosen.reason}; the run trained in {recorded['name']} on "
                                               f"{recorded['device']}")
    else:
        precision = choose_precision(requested, env.device)
    if env.enabled:
        distributed.shared(float(list(DTYPES).index(precision.name)), env)
    return precision


def timed_precision(model: nn.Module, data: TrainingData, cfg: Config, pack: bool | str, device: str,
                    batches: int = 3) -> Precision:
    """fp32 or bf16 for a run that `auto` would train in bf16 on a CPU, by timing the forward and backward of
    a copy of its model on its first `batches` batches in both (each batched as `pack` gives it: data.pack
    auto packs in fp32 only), in turns after one untimed step each; bf16 when its steps take under
    hardware.STEP_BF16_PAYS of fp32's time. A few seconds for the demo's model on 2 cores; the model, the
    data and the random streams are left as they were, and cfg.data.pack is resolved for the choice."""
    def use(name: str) -> None:  # data.pack as `pack` resolves for this precision (batches read it)
        cfg.data.pack = pack
        cfg.resolve_pack(name)

    trial = copy.deepcopy(model).train()
    runs = {}
    for name in ("fp32", "bf16"):
        use(name)
        runs[name] = (Precision(name, "").autocast(device),
                      [data.train_batch(step, cfg.train.batch_size, 0, cfg.train.batch_size).to(device)
                       for step in range(batches)])

    def step(name: str, batch) -> float:
        t0 = time.perf_counter()
        with runs[name][0]:
            _, loss = trial(**batch.model_inputs(loss_only=True))
        loss.backward()
        trial.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    seconds = {"fp32": 0.0, "bf16": 0.0}
    with torch.random.fork_rng(devices=[]):
        for name in seconds:
            step(name, runs[name][1][0])  # the first step picks and prepares kernels
        for i in range(batches):
            for name in seconds:
                seconds[name] += step(name, runs[name][1][i])
    ratio = seconds["bf16"] / max(seconds["fp32"], 1e-9)
    timed = (f"auto: this model's training step measured {seconds['bf16'] / batches:.2f} s in bf16 and "
             f"{seconds['fp32'] / batches:.2f} s in fp32 on this CPU")
    chosen = (Precision("bf16", timed) if ratio < hardware.STEP_BF16_PAYS else
              Precision("fp32", f"{timed} (its bf16 matmuls are faster, the whole step is not)"))
    use(chosen.name)
    return chosen


def init_weights(model: nn.Module, source: str | Path) -> None:
    """Copy weights from a checkpoint: a text GPT's go into the decoder, an omni model's wherever names match.
    A damaged weights file (cut short, wrong metadata, a tensor of another shape, NaN) is a CheckpointError
    naming it."""
    if is_pretrained_folder(source):  # a Hugging Face language model: the decoder
        target = getattr(model, "gpt", model)
        pretrained = load_decoder(source)
        if target.config.vocab_size > pretrained.config.vocab_size:  # rows for the tokens omnigpt added
            pretrained.resize_vocab(target.config.vocab_size)
        target.load_state_dict(pretrained.state_dict())
        print(f"init_from {source}: the decoder ({pretrained.config.n_layer} layers, "
              f"{sum(p.numel() for p in pretrained.parameters()) / 1e6:.1f}M parameters)", file=sys.stderr)
        return
    weights = resolve(source) / "model.safetensors"
    if hasattr(model, "adopt_pretrained"):  # a classifier: its encoders from the source's
        parts = model.adopt_pretrained(read_weights(weights), str(source))
        print(f"init_from {source}: {', '.join(parts)}", file=sys.stderr)
        return
    target = getattr(model, "gpt", model)
    names = list(weight_shapes(weights))
    into = model if any(n.startswith("gpt.") for n in names) else target
    missing, unexpected = load_weights(into, weights, strict=False)
    wanted = {n for n, _ in target.named_parameters()}
    if into is target:
        missing = [m for m in missing if m in wanted]
    else:
        missing = [m for m in missing if m.startswith("gpt.")]
    unexpected = [u for u in unexpected if not u.startswith("ctc_head.")]  # a training head this run has not
    if missing or unexpected:
        raise ConfigError(f"train.init_from {source}: its weights do not fit this model's decoder (missing "
                          f"{sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]}); use its model config")


def freeze(model: nn.Module, parts: list[str]) -> None:
    """Keep the named parts (validated by the config) out of training."""
    if not parts:
        return
    for module in model.modules_to_freeze(parts):
        module.requires_grad_(False)


def _append_metrics(path: Path, row: dict) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as exc:  # a full disk: one line naming the file (the last checkpoint stays loadable)
        raise write_error("the metrics", path, exc) from exc


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after `step` by a run that died before its next checkpoint."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):  # a line cut short by a killed process
            continue
    write_atomic(path, "".join(line + "\n" for line in keep))


def _adopt_model_config(cfg: Config, source: str) -> None:
    """Fine-tuning from a checkpoint uses that checkpoint's decoder (and, where the run has them too, its image
    and audio encoders; audio.ctc_weight stays the run's own)."""
    if is_pretrained_folder(source):  # a Hugging Face language model: its decoder, its tokenizer's vocabulary
        cfg.model = model_config(read_config(source))
        cfg.model.vocab_size = max(cfg.model.vocab_size, Tokenizer.from_pretrained(source).vocab_size)
        cfg.validate()
        return
    folder = resolve(source)
    start = Config.load(folder / "config.yaml")
    cfg.model = start.model
    if start.vision is not None and cfg.vision is not None:
        cfg.vision = start.vision
        if cfg.classifier is None:
            cfg.fusion = start.fusion
    if start.audio is not None and cfg.audio is not None:
        # the CTC loss is this run's choice; its head, where both have one, is carried over with the encoder
        cfg.audio = replace(start.audio, ctc_weight=cfg.audio.ctc_weight)
    cfg.validate()


def train(config: Config, out_dir: str | Path, resume: bool = False, stop_at_step: Optional[int] = None,
          progress: bool = True, after_validation: Optional[Callable[[Path], None]] = None,
          deadline: Optional[float] = None) -> TrainResult:
    """Pretrain a GPT on config.data.corpus, or fine-tune on config.data.sources (image-text examples);
    checkpoints and metrics.jsonl go to out_dir (`omnigpt.train` also draws loss.png there). A train row of
    metrics.jsonl has `skipped_files` when rows of its step named a file that could not be decoded and were
    drawn again (data.on_bad_file: skip).

    resume: continue from out_dir's latest checkpoint, exactly as if the run had never stopped.
    stop_at_step: end (with a checkpoint) after this step without changing the schedule, which still
    runs to train.max_steps; a later `resume=True` carries on.
    after_validation: called with out_dir after each validation (on the main process).
    deadline: a wall-clock time (`time.time()`) by which training ends: the time budget becomes what is left
    of it when the first step starts (at most train.max_minutes), recorded in the run's config.yaml. A caller
    whose set-up takes longer on a slower machine (synthesizing speech) thus still finishes on time.
    """
    cfg = config.validate()
    env = distributed.setup(cfg.train.device)
    tc = cfg.train
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start_step = 0
    state = None
    resume_from: Optional[Path] = None
    if resume:
        found = list_checkpoints(run_dir)
        if not found and env.is_main:
            print(f"nothing to resume in {run_dir}: starting a new run there", file=sys.stderr)
        if found:
            resume_from = found[-1]
            state = load_trainer_state(resume_from)
            start_step = state["meta"]["step"]
    elif list_checkpoints(run_dir) or (run_dir / "data").exists():
        raise ConfigError(f"{run_dir} already holds a training run: continue it with --resume (resume=True), "
                          f"or choose a new output folder")
    if state is not None:
        if tc.init_from:  # the run's model is the one it adopted when it started
            _adopt_model_config(cfg, resume_from)
        saved_train = Config.load(resume_from / "config.yaml").train
        saved = saved_train.freeze
        if sorted(saved) != sorted(tc.freeze):
            raise ConfigError(f"train.freeze is {tc.freeze} but the run being resumed trained with {saved}: the "
                              f"optimizer state belongs to those parameters; start a new run with "
                              f"--init-from {run_dir} instead")
        if saved_train.optimizer != tc.optimizer:
            raise ConfigError(f"train.optimizer is {tc.optimizer} but the run being resumed trained with "
                              f"{saved_train.optimizer}, whose state the other cannot continue; resume with "
                              f"train.optimizer={saved_train.optimizer}, or start a new run with --init-from "
                              f"{run_dir}")
    elif tc.init_from:
        tc.init_from = str(local_folder(tc.init_from))  # hf:ORG/NAME: the cached folder, recorded as such
        _adopt_model_config(cfg, tc.init_from)
    precision = run_precision(tc.precision, env, state["meta"].get("precision") if state else None)
    tc.precision = precision.name  # the run folder records what was chosen, and a resume keeps it
    pack_setting = cfg.data.pack
    cfg.resolve_pack(precision.name)  # likewise data.pack: auto
    if env.is_main:
        print(precision.describe(), file=sys.stderr)
    distributed.barrier(env)  # every process has looked at run_dir before the first one writes to it
    if env.is_main:
        write_atomic(run_dir / "config.yaml", cfg.to_yaml())
    data = prepare(cfg, run_dir, env)
    tokenizer = data.tokenizer

    torch.manual_seed(tc.seed)  # the same initial weights on every process
    model = build_model(cfg, tokenizer.image_id, tokenizer.audio_id, tokenizer).to(env.device)
    if tc.init_from and state is None:
        init_weights(model, tc.init_from)
    if tc.lora is not None:
        wrapped = apply_lora(model, tc.lora)
        if env.is_main and state is None:
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(f"lora: rank {tc.lora.rank} adapters on {len(wrapped)} layers, {trainable / 1e6:.3f}M trainable "
                  f"parameters of {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M", file=sys.stderr)
    freeze(model, tc.freeze)
    if state is None and precision.to_time and not env.enabled:
        precision = timed_precision(model, data, cfg, pack_setting, env.device)
        tc.precision = precision.name
        write_atomic(run_dir / "config.yaml", cfg.to_yaml())
        print(precision.describe(), file=sys.stderr)
    optimizer = build_optimizer(model, tc)
    torch.manual_seed(tc.seed + env.rank)  # then each process draws its own dropout masks
    if state is not None:
        load_weights(model, resume_from / "model.safetensors", device=env.device)
        optimizer_from_tensors(optimizer, state["tensors"], state["meta"]["optimizer"],
                               resume_from / "trainer_state.safetensors")
        set_rng_state(_rank_rng(state["tensors"], env.rank))
    device_type = torch.device(env.device).type
    # fp16 gradients underflow without loss scaling; with other precisions the scaler passes values through.
    scaler = torch.amp.GradScaler(device_type, enabled=precision.needs_scaler)
    if state is not None and state["meta"].get("grad_scaler"):
        scaler.load_state_dict(state["meta"]["grad_scaler"])
    metrics_path = run_dir / "metrics.jsonl"
    if env.is_main:
        _truncate_metrics(metrics_path, start_step)

    step_model: nn.Module = model
    if tc.compile:
        step_model = torch.compile(model)
    if env.enabled:
        step_model = nn.parallel.DistributedDataParallel(step_model, device_ids=None if env.device == "cpu"
                                                         else [env.local_rank])
    autocast = precision.autocast(env.device)

    if deadline is not None:
        left = distributed.shared((deadline - time.time()) / 60, env)
        if left <= 0:
            raise ConfigError(f"the training deadline passed {-left * 60:.0f} s before the first step (set-up took "
                              f"longer than the time allowed); give a longer budget")
        tc.max_minutes = left if tc.max_minutes is None else min(tc.max_minutes, left)
        if env.is_main:
            write_atomic(run_dir / "config.yaml", cfg.to_yaml())
            print(f"training budget: {tc.max_minutes:.2f} minutes (what set-up left before the deadline)",
                  file=sys.stderr)
    global_batch = tc.batch_size * tc.grad_accum * env.world_size
    end_step = tc.max_steps if stop_at_step is None else min(tc.max_steps, stop_at_step)
    elapsed_before = state["meta"].get("seconds", 0.0) if state else 0.0  # for the record; budgets are per call
    t0 = time.time()
    desc = "finetune" if cfg.data.sources else "pretrain"
    show = progress and env.is_main
    budget = None if tc.max_minutes is None else max(1, round(60 * tc.max_minutes))
    if budget is not None:  # a time budget: the bar fills with the seconds used (steps in the postfix)
        bar = tqdm(total=budget, disable=not show, unit="s", dynamic_ncols=True, desc=desc,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s{postfix}")
    else:
        bar = tqdm(total=end_step, initial=start_step, disable=not show, unit="step", dynamic_ncols=True, desc=desc)
    step = start_step
    train_loss = float("nan")
    val_loss: Optional[float] = state["meta"].get("val_loss") if state else None
    ckpt: Optional[Path] = resume_from

    def checkpoint(at: int, rng: dict[str, torch.Tensor]) -> Path:
        tensors, meta = optimizer_to_tensors(optimizer)
        tensors.update(rng)
        trainer_meta = {"step": at, "optimizer": meta, "seconds": elapsed_before + time.time() - t0,
                        "val_loss": val_loss, "tokens": at * global_batch * cfg.model.block_size,
                        "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                        "precision": {"name": precision.name, "device": device_type}}
        def extra(folder: Path) -> None:
            save_trainer_state(folder, tensors, trainer_meta)
            if tc.lora is not None:  # the adapters alone too, to share or load onto the base (--adapter)
                save_adapter(model, tc.lora, folder)

        return save_checkpoint(run_dir, at, model, cfg, tokenizer, extra, keep=tc.keep_checkpoints)

    model.train()
    while step < end_step:
        spent = None
        if tc.decay_over == "minutes":  # every process uses the main one's clock, so their updates agree
            spent = distributed.shared((time.time() - t0) / (60 * tc.max_minutes), env)
        lr = learning_rate(step, tc, spent)
        set_learning_rate(optimizer, lr)
        total = torch.zeros((), device=env.device)
        batches = []
        for micro in range(tc.grad_accum):
            first = (micro * env.world_size + env.rank) * tc.batch_size
            batches.append(data.train_batch(step, global_batch, first, first + tc.batch_size))
        # Each micro-batch's mean loss is weighted by its share of the step's supervised tokens, so the
        # gradient is that of the mean over the whole global batch however it is split (DDP then averages
        # the processes' gradients, hence the world_size factor). Rows drawn again for a file that could not
        # be decoded (data.on_bad_file: skip) are summed alongside.
        sums = distributed.sum_across(torch.tensor([sum(b.loss_weight() for b in batches),
                                                    sum(getattr(b, "skipped", 0) for b in batches)],
                                                   dtype=torch.float64, device=env.device), env)
        step_weight, skipped = float(sums[0]), int(sums[1])
        for micro, batch in enumerate(batches):
            share = batch.loss_weight() / step_weight
            batch = batch.to(env.device)
            sync = micro == tc.grad_accum - 1 or not env.enabled
            with (contextlib.nullcontext() if sync else step_model.no_sync()):
                with autocast:
                    _, loss = step_model(**batch.model_inputs(loss_only=True))
                scaler.scale(loss * (share * env.world_size)).backward()
            total += loss.detach() * share
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip if tc.grad_clip > 0 else math.inf)
        scaler.step(optimizer)  # skipped (and the scale lowered) when fp16 gradients overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        train_loss = float(distributed.sum_across(total, env))
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} at step {step}; lower train.lr or "
                                     f"resume from the last checkpoint")
        if env.is_main:
            row = {"step": step, "split": "train", "loss": round(train_loss, 6), "lr": lr,
                   "grad_norm": _finite(round(float(grad_norm), 4))}
            if skipped:  # rows of this step whose file could not be decoded, replaced by other examples
                row["skipped_files"] = skipped
            _append_metrics(metrics_path, row)
        if budget is not None:
            bar.update(min(budget, int(time.time() - t0)) - bar.n)
            bar.set_postfix(step=f"{step}/{end_step}", loss=f"{train_loss:.3f}", refresh=False)
        else:
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.3f}", refresh=False)
        out_of_time = tc.max_minutes is not None and (time.time() - t0) / 60 >= tc.max_minutes
        stop = distributed.agree(out_of_time, env) or step == end_step
        if step % tc.eval_interval == 0 or stop:
            val_loss = validation_loss(model, data, tc.eval_batches, tc.batch_size, autocast, env.device)
            per_task = {task: validation_loss(model, data, tc.eval_batches, tc.batch_size, autocast, env.device,
                                              task) for task in getattr(data, "val_tasks", lambda: [])()}
            if env.is_main:
                _append_metrics(metrics_path, {"step": step, "split": "val", "loss": round(val_loss, 6)})
                for task, loss in per_task.items():
                    _append_metrics(metrics_path, {"step": step, "split": "val", "task": task, "loss": round(loss, 6)})
                if after_validation is not None:
                    after_validation(run_dir)
            if progress and env.is_main:
                bar.write(f"step {step}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
        if step % tc.save_interval == 0 or stop:
            rng = _gather_rng(env)  # every process's generators, so each resumes its own dropout stream
            if env.is_main:
                ckpt = checkpoint(step, rng)
        distributed.barrier(env)
        if stop:
            break
    bar.close()
    seconds = elapsed_before + time.time() - t0
    shortfall = step_shortfall(tc, step - start_step, time.time() - t0, precision.name, env.device,
                               ran_out=step < end_step)
    if shortfall and env.is_main:
        print(f"warning: {shortfall}", file=sys.stderr)
    distributed.teardown(env)
    return TrainResult(run_dir, step, train_loss, val_loss, ckpt, seconds, precision.name, shortfall)


def _finite(value: float) -> Optional[float]:
    """JSON has no infinity: a step that fp16 skipped for overflowing gradients logs its norm as null."""
    return value if math.isfinite(value) else None


# The demo's recipe meets its targets at about 80% of its tuned speed and misses them at 50% (a 2-core Zen 5
# and a 2-core Xeon in fp32, 2026-12-01), so a run below this fraction is told so, not only one at under half.
SHORTFALL_FRACTION = 0.8


def step_shortfall(tc: TrainConfig, steps: int, seconds: float, precision: str, device: str,
                   ran_out: bool) -> Optional[str]:
    """What to tell a user whose time budget ran out at under SHORTFALL_FRACTION of the speed the recipe was
    tuned at (train.tuned_steps_per_minute): the measured speed, the likely cause, and what to change; None
    when all is well, when the run ended before its budget, or when it was too short (under a minute) to judge."""
    tuned = tc.tuned_steps_per_minute
    if not ran_out or tc.max_minutes is None or tuned is None or seconds < 60:
        return None
    rate = steps / (seconds / 60)
    if rate >= SHORTFALL_FRACTION * tuned:
        return None
    minutes = seconds / 60
    cause = ""
    if precision == "bf16" and torch.device(device).type == "cpu" and not hardware.cpu_bf16_pays():
        cause = " bf16 is slow on this CPU: set train.precision: auto (fp32 here)."
    return (f"this run made {steps} steps in {minutes:.1f} minutes ({rate:.0f} a minute), {rate / tuned:.0%} of "
            f"the {tuned:.0f} a minute its recipe was tuned at, so expect scores below the recipe's.{cause} To "
            f"train as far as the recipe does in {minutes:.0f} minutes, give it about {minutes * tuned / rate:.0f} "
            f"(--minutes; a resumed run adds its own), or a faster machine.")
