"""`omnigpt <command>`: wiring only; each command calls the Python API that does the work."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

REPO_CONFIGS = Path(__file__).resolve().parent / "configs"


# Exit statuses: 2 when the command line or its config asks for something impossible (as argparse does for a
# bad flag), 1 when a well-formed command fails at its work (an unreadable file, a NaN loss, a full disk).
USAGE_ERROR = 2
FAILURE = 1


class CommandError(ValueError):
    """The command line asks for something impossible (printed as one line, exit status 2)."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows each option's default, except where there is none to show (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default is None or action.default is False or action.default is argparse.SUPPRESS
                or "%(default)" in text or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.help is None and action.default is not None and action.default is not False and action.option_strings:
            action.help = "(default: %(default)s)"  # argparse shows no line at all for an option without help
        return action


MAX_SEED = 2 ** 63 - 1
MAX_BEAMS = 64  # omnigpt.generate.MAX_BEAMS (not imported: the parser loads no torch)
MAX_VOCAB = 2 ** 20  # far above any tokenizer in use (256k); beyond it the trainer's tables exhaust memory
MAX_UTTERANCES = 10 ** 6  # about 1,000 hours of built-in speech


def number(low: Optional[float] = None, high: Optional[float] = None, above: bool = False):
    """An argparse type: a finite float >= low (> low with `above`) and <= high; NaN and inf are refused,
    since a NaN passes no comparison and slips past later checks."""
    bounds = " and ".join(b for b in ((f"{'above' if above else 'at least'} {low:g}" if low is not None else ""),
                                      (f"at most {high:g}" if high is not None else "")) if b)
    allowed = "a finite number" + (f" {bounds}" if bounds else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if (not math.isfinite(value) or (low is not None and (value <= low if above else value < low))
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value
    return parse


def whole(low: int = 1, high: Optional[int] = None):
    """An argparse type: a whole number in [low, high]."""
    allowed = f"a whole number >= {low}" + (f" and <= {high}" if high is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value
    return parse


def text(allow_empty: bool = True):
    """An argparse type: text that is valid UTF-8 (bytes that are not arrive as lone surrogates), not empty
    unless allowed."""
    def parse(value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise argparse.ArgumentTypeError(f"is not valid UTF-8: {value.encode('utf-8', 'replace').decode()!r}") \
                from None
        if not allow_empty and not value:
            raise argparse.ArgumentTypeError("must not be empty")
        return value
    return parse


def _config_path(name: str) -> Path:
    """A YAML path, or the name of a config shipped with omnigpt (`text-tiny`)."""
    path = Path(name)
    if path.is_dir():
        inside = " (its config is " + str(path / "config.yaml") + ")" if (path / "config.yaml").is_file() else ""
        raise CommandError(f"--config {name} is a folder; give a YAML file{inside}")
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return path
    shipped = REPO_CONFIGS / f"{name}.yaml"
    if not shipped.is_file():
        names = ", ".join(sorted(p.stem for p in REPO_CONFIGS.glob("*.yaml")))
        raise CommandError(f"--config {name}: no such file, and omnigpt ships no config of that name ({names})")
    return shipped


# -------------------------------------------------------------------------------------------- commands
def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from .data.text import read_corpus
    from .tokenizer import Tokenizer

    if args.kind == "byte":
        tok = Tokenizer.byte_level()
    else:
        tok = Tokenizer.train_bpe(read_corpus(args.input, args.errors), args.vocab_size)
    path = tok.save(args.out)
    print(json.dumps({"path": str(path), "kind": tok.kind, "vocab_size": tok.vocab_size}))


def _load_run_config(args: argparse.Namespace):
    from .config import Config

    from .checkpoint import is_pretrained_folder, list_checkpoints, resolve
    from .interop.hub import is_hub_name

    found = list_checkpoints(args.out) if args.resume else []
    if found:  # a checkpoint's own config: written atomically with it, so never cut short
        cfg = Config.load(found[-1] / "config.yaml")
    elif args.config:
        cfg = Config.load(_config_path(args.config))
    elif getattr(args, "init_from", None) and not is_hub_name(args.init_from) and \
            not is_pretrained_folder(args.init_from):
        # the run it starts from (an assembled model, an earlier stage): its data and settings, nothing frozen
        cfg = Config.load(resolve(args.init_from) / "config.yaml")
        cfg.train.freeze = []
    else:
        raise CommandError("--config is required (or --resume with a run folder that has a checkpoint, or "
                           "--init-from an omnigpt run, whose config is then used)")
    if getattr(args, "overrides", None):
        cfg = cfg.with_overrides(args.overrides)
    if args.max_steps is not None:
        cfg.train.max_steps = args.max_steps
    if args.minutes is not None:
        cfg.train.max_minutes = args.minutes
    if args.data:
        if args.command == "finetune":
            cfg.data.sources = list(args.data)
        else:
            cfg.data.corpus = list(args.data)
    for name in ("images", "on_bad_file"):
        if getattr(args, name, None):
            setattr(cfg.data, name, getattr(args, name))
    if getattr(args, "val", None):
        cfg.data.val_sources = list(args.val)
    if getattr(args, "columns", None):
        cfg.data.columns = _columns(args.columns)
    if getattr(args, "init_from", None):
        cfg.train.init_from = args.init_from
    if getattr(args, "freeze", None) is not None:
        cfg.train.freeze = [p.strip() for p in args.freeze.split(",") if p.strip()]
    if args.errors:
        cfg.data.encoding_errors = args.errors
    if args.precision:
        cfg.train.precision = args.precision
    if args.device:
        cfg.train.device = args.device
    if args.optimizer:
        cfg.train.optimizer = args.optimizer
    if args.stop_at_step is not None and args.stop_at_step > cfg.train.max_steps:
        raise CommandError(f"--stop-at-step {args.stop_at_step} is past the run's end (train.max_steps "
                           f"{cfg.train.max_steps}): give a step up to it, or raise --max-steps")
    return cfg.validate()


def cmd_train(args: argparse.Namespace) -> None:
    """`pretrain` and `finetune`: the same trainer; fine-tuning needs multimodal sources."""
    from .recipes.train import train

    cfg = _load_run_config(args)
    if args.command == "finetune" and not cfg.data.sources:
        raise CommandError("nothing to fine-tune on: give --data (builtin:scenes, coco:FILE.json with "
                           "--images DIR, or a .jsonl manifest) or data.sources in the config")
    result = train(cfg, args.out, resume=args.resume, stop_at_step=args.stop_at_step, progress=not args.quiet)
    print(json.dumps({"step": result.step, "train_loss": result.train_loss, "val_loss": result.val_loss,
                      "checkpoint": str(result.checkpoint), "seconds": round(result.seconds, 1)}))


def _generation_config(args: argparse.Namespace):
    from .generate import GenerationConfig

    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                            num_beams=args.num_beams, stop_strings=list(args.stop or []), seed=args.seed,
                            truncate=args.truncate)


def cmd_generate(args: argparse.Namespace) -> None:
    from .generate import generate, stream
    from .checkpoint import load_checkpoint

    ckpt = _generator(load_checkpoint(args.checkpoint, args.device, args.dtype, args.adapter))
    gen = _generation_config(args)
    prompts = list(args.prompt)
    images = _media_per_prompt(prompts, list(args.image or []), "image")
    audio = _media_per_prompt(prompts, list(args.audio or []), "audio")
    shown = prompts
    if args.chat:
        from .chat import chat_messages
        from .data.conversations import ChatTemplate

        template = ChatTemplate.of(ckpt.tokenizer)
        prompts = [template.prompt(chat_messages([], p, args.system)) for p in prompts]
    elif args.system:
        raise CommandError("--system needs --chat")
    if args.stream:
        if len(prompts) != 1:
            raise CommandError("--stream takes exactly one --prompt")
        sys.stdout.write("" if args.chat else prompts[0])
        for piece in stream(ckpt.model, ckpt.tokenizer, prompts[0], gen, images=images[0] if images else None,
                            audio=audio[0] if audio else None):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    outs = generate(ckpt.model, ckpt.tokenizer, prompts, gen, images=images, audio=audio)
    if args.json:
        print(json.dumps([{"prompt": p, "completion": o.strip() if args.chat else o} for p, o in zip(shown, outs)],
                         ensure_ascii=False))
    else:
        for p, o in zip(shown, outs):
            print(o.strip() if args.chat else p + o)


def _generator(ckpt):
    """The checkpoint, if its model writes text (a classifier's has no decoder to generate with)."""
    if ckpt.model.predicts == "classes":
        raise CommandError(f"{ckpt.path} is a classifier: use omnigpt classify")
    return ckpt


def _media_per_prompt(prompts: list[str], files: list[str], kind: str) -> Optional[list[list[str]]]:
    """Hand the --image (or --audio) files to the prompts in order, each taking one per <image> (<audio>)
    placeholder."""
    if not files:
        return None
    wanted = [p.count(f"<{kind}>") for p in prompts]
    if sum(wanted) != len(files):
        raise CommandError(f"the prompts hold {sum(wanted)} <{kind}> placeholder(s) but {len(files)} "
                           f"--{kind} file(s) were given")
    out, i = [], 0
    for n in wanted:
        out.append(files[i:i + n])
        i += n
    return out


def cmd_caption(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .data.image import load_image
    from .generate import generate

    ckpt = _generator(load_checkpoint(args.checkpoint, args.device, args.dtype, args.adapter))
    if "image" not in ckpt.model.accepts:
        raise CommandError(f"{ckpt.path} has no image encoder to caption with")
    images = [load_image(p) for p in args.images]
    caps = generate(ckpt.model, ckpt.tokenizer, [args.prompt] * len(images), images=[[im] for im in images],
                    max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    results = [{"image": path, "caption": cap.strip()} for path, cap in zip(args.images, caps)]
    if args.attention_map:
        _attention_maps(ckpt, args, images, results)
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
    else:
        for row in results:
            extra = f"  (attention map: {row['attention_map']})" if "attention_map" in row else ""
            print(f"{row['image']}: {row['caption']}{extra}")


def _attention_maps(ckpt, args: argparse.Namespace, images: list, results: list[dict]) -> None:
    """--attention-map: one PNG per captioned image (numbered when there are several)."""
    from .viz import caption_attention_map

    for k, (img, row) in enumerate(zip(images, results)):
        out = Path(args.attention_map)
        if len(images) > 1:
            out = out.with_name(f"{out.stem}-{k + 1}{out.suffix or '.png'}")
        row["attention_map"] = str(caption_attention_map(ckpt.model, ckpt.tokenizer, img, args.prompt,
                                                         row["caption"], out))


def cmd_transcribe(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .subtitles import render_all, write_transcript
    from .transcribe import WHISPER_TEMPERATURES, transcribe

    ckpt = _generator(load_checkpoint(args.checkpoint, args.device, args.dtype, args.adapter))
    if "audio" not in ckpt.model.accepts:
        raise CommandError(f"{ckpt.path} has no audio encoder to transcribe with")
    if args.format in ("srt", "vtt") and len(args.audio) > 1 and not args.output_dir:
        raise CommandError(f"--format {args.format} with {len(args.audio)} files needs --output-dir (one file each)")
    missing = [a for a in args.audio if not Path(a).is_file()]
    if missing:  # before any work: a long batch should not fail at its last file
        raise CommandError(f"audio file not found: {missing[0]}")
    stems = [Path(a).stem for a in args.audio]
    clash = next((s for s in stems if stems.count(s) > 1), None)
    if args.output_dir and clash:
        raise CommandError(f"two inputs are named {clash!r}: their --output-dir files would overwrite each other")
    if not args.overlap < args.window / 2:
        raise CommandError(f"--overlap ({args.overlap:g} s) must be less than half of --window ({args.window:g} s)")
    temperatures = [0.0] if args.no_fallback else (args.temperatures or list(WHISPER_TEMPERATURES))
    options = dict(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, window_seconds=args.window,
                   overlap_seconds=args.overlap, temperatures=temperatures)
    results = []
    for path in args.audio:
        results.append((path, transcribe(ckpt.model, ckpt.tokenizer, path, progress=not args.quiet, **options)))
        if args.output_dir:  # each file as soon as it is done
            print(write_transcript(path, results[-1][1], args.format, args.output_dir))
    if not args.output_dir:
        print(render_all(results, args.format), end="")


def _temperatures(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0,0.2,0.4, got {text!r}") from None
    if not values or not all(math.isfinite(v) and v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"temperatures must be finite numbers >= 0, got {text!r}")
    return values


def cmd_chat(args: argparse.Namespace) -> None:
    from .chat import ChatSession, repl
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint, args.device, args.dtype, args.adapter)
    if ckpt.model.predicts == "classes":
        raise CommandError(f"{ckpt.path} is a classifier: use omnigpt classify")
    gen = _generation_config(args)
    repl(ChatSession(ckpt.model, ckpt.tokenizer, gen, system=args.system))


def cmd_serve(args: argparse.Namespace) -> None:
    from .serve import serve

    serve(args.checkpoint, host=args.host, port=args.port, device=args.device, dtype=args.dtype,
          adapter=args.adapter, api_key=args.api_key or os.environ.get("OMNIGPT_API_KEY"),
          max_batch=args.max_batch, max_queue=args.max_queue, media_root=args.media_root, model_id=args.name)


def cmd_speech_data(args: argparse.Namespace) -> None:
    from .data.builtin.speech import hours_to_count, write_speech_dataset

    count = args.count or hours_to_count(args.hours)
    if count > MAX_UTTERANCES:
        raise CommandError(f"--hours {args.hours:g} means {count} utterances; at most {MAX_UTTERANCES} are written")
    path = write_speech_dataset(args.out, args.split, count, args.seed)
    print(json.dumps({"manifest": str(path), "split": args.split, "utterances": count}))


def _columns(text: str) -> dict[str, str]:
    from .data.hf_datasets import parse_columns
    from .data.text import DataError

    try:
        return parse_columns(text)
    except DataError as exc:
        raise CommandError(str(exc)) from None


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .data.examples import cache_dir
    from .data.hf_datasets import dataset_rows, is_dataset_spec
    from .evaluate import EvalOptions, evaluate_checkpoint

    ckpt = load_checkpoint(args.checkpoint, args.device, args.dtype, args.adapter)
    if args.data and is_dataset_spec(args.data):  # a dataset's rows, written once as a JSONL file
        columns = _columns(args.columns) if args.columns else ckpt.config.data.columns
        args.data = str(dataset_rows(args.data, columns, cache_dir(ckpt.config)))
    opts = EvalOptions(args.task, args.data, args.images, args.split, args.limit, args.on_bad_file, args.errors,
                       args.plot, progress=not args.quiet, positive=args.positive, threshold=args.threshold)
    print(json.dumps(evaluate_checkpoint(ckpt, opts)))


def cmd_compare_fusion(args: argparse.Namespace) -> None:
    from .recipes.compare import STRATEGIES, compare_fusion, results_markdown
    from .data.examples import read_sources, training_labels

    from .config import Config

    cfg = Config.load(_config_path(args.config))
    if cfg.classifier is None:
        raise CommandError("compare-fusion needs a config with a 'classifier' section (see the shipped config classify-builtin)")
    if args.init_from:
        cfg.train.init_from = args.init_from
    strategies = args.strategies.split(",") if args.strategies else list(STRATEGIES)
    test = None
    if args.test:
        # checked against the classes training will learn before any strategy trains
        sets = read_sources(cfg, [args.test], "test", labels=training_labels(cfg))
        test = [s.example(i) for s in sets for i in range(len(s))]
    rows = compare_fusion(cfg, args.out, strategies, args.minutes, test, progress=not args.quiet)
    print(results_markdown(rows), end="")
    print(f"written: {Path(args.out) / 'results.md'}, results.json, fusion.png and STRATEGY/confusion.png")


def _classifier_inputs(args: argparse.Namespace, modalities: Sequence[str]) -> dict:
    """--text, --image and --audio as the classifier reads them, or a CommandError naming what is wrong."""
    given = {"text": args.text, "image": args.image, "audio": args.audio}
    extra = [m for m, v in given.items() if v is not None and m not in modalities]
    if extra:
        raise CommandError(f"this classifier reads {', '.join(modalities)}; it cannot take --{extra[0]}")
    if all(given[m] is None for m in modalities):
        raise CommandError(f"give at least one input: {', '.join('--' + m for m in modalities)}")
    for m in ("image", "audio"):
        if given[m] is not None and Path(given[m]).is_dir():
            raise CommandError(f"--{m} {given[m]} is a folder; give a file")
        if given[m] is not None and not Path(given[m]).is_file():
            raise CommandError(f"{m} file not found: {given[m]}")
    if given["text"] is not None and not given["text"].strip():
        raise CommandError("--text is empty")
    placeholder = next((p for p in ("<image>", "<audio>") if p in (given["text"] or "")), None)
    if placeholder:
        raise CommandError(f"--text holds {placeholder}, which the model reads as a placeholder for a file: give "
                           f"the file with --{placeholder[1:-1]} and remove it from the text")
    return given


def cmd_classify(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .data.examples import Example
    from .data.inputs import Inputs

    ckpt = load_checkpoint(args.checkpoint, args.device, args.dtype, args.adapter)
    model = ckpt.model
    if model.predicts != "classes":
        raise CommandError(f"{ckpt.path} is not a classifier (its config has no 'classifier' section)")
    given = _classifier_inputs(args, model.modalities)
    example = Example(given["text"], image=given["image"] and Path(given["image"]),
                      audio=given["audio"] and Path(given["audio"]), label=model.labels[0])
    inputs = Inputs(ckpt.config, ckpt.tokenizer).batch([example]).to(next(model.parameters()).device).model_inputs()
    inputs.pop("labels"), inputs.pop("class_weights")
    probs = model.probabilities(**inputs)[0].tolist()
    best = max(range(len(probs)), key=probs.__getitem__)
    print(json.dumps({"label": model.labels[best],
                      "probabilities": {label: round(p, 6) for label, p in zip(model.labels, probs)},
                      "inputs": [m for m in model.modalities if given[m] is not None]}))


def cmd_export(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint
    from .interop.export import export
    from .model.lora import merge

    ckpt = load_checkpoint(args.checkpoint, "cpu", "fp32", args.adapter)
    if ckpt.model.predicts != "tokens":
        raise CommandError(f"{ckpt.path} is a classifier; export writes language models")
    merge(ckpt.model)  # LoRA adapters folded into the weights they adapt
    out = export(ckpt.model, ckpt.tokenizer, args.out, ckpt.config.to_yaml())
    print(json.dumps({"out": str(out), "files": sorted(p.name for p in out.iterdir() if not p.name.startswith("."))}))


def cmd_merge_adapter(args: argparse.Namespace) -> None:
    from .checkpoint import load_checkpoint, save_checkpoint
    from .model.lora import LoRALinear, merge

    ckpt = load_checkpoint(args.checkpoint, "cpu", "fp32", args.adapter)
    if not any(isinstance(m, LoRALinear) for m in ckpt.model.modules()):
        raise CommandError(f"{ckpt.path} has no LoRA adapters to merge: give a LoRA run, or --adapter DIR")
    merge(ckpt.model)
    ckpt.config.train.lora = None
    folder = save_checkpoint(args.out, ckpt.step, ckpt.model, ckpt.config, ckpt.tokenizer)
    print(json.dumps({"checkpoint": str(folder)}))


def cmd_assemble(args: argparse.Namespace) -> None:
    from .config import Config
    from .interop.assemble import write_assembled

    if args.vision is None and args.audio is None:
        raise CommandError("assemble needs --vision, --audio or both besides --lm")
    base = Config.load(_config_path(args.config)) if args.config else None
    folder = write_assembled(args.out, args.lm, args.vision, args.audio, base, args.seed)
    print(json.dumps({"checkpoint": str(folder), "next": f"omnigpt finetune --init-from {args.out} --freeze "
                      f"{','.join(p for p, given in (('vision', args.vision), ('audio', args.audio)) if given)},"
                      f"decoder --out RUN"}))


def cmd_demo(args: argparse.Namespace) -> None:
    from .recipes.demo import DemoError, run_demo

    try:
        run_demo(args.out, args.minutes, args.scenes, args.utterances, progress=not args.quiet,
                 precision=args.precision, device=args.device, total_minutes=args.total_minutes)
    except DemoError as e:
        raise CommandError(str(e)) from None


# ---------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .recipes.demo import DEMO_MINUTES

    p = _Parser(prog="omnigpt", description="Build, pretrain, fine-tune, sample and evaluate a multimodal GPT.")
    p.add_argument("--version", action="version", version=f"omnigpt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train one small GPT on built-in text, scenes and speech; score every task and "
                                    "write report.html")
    d.add_argument("--minutes", type=number(0, above=True), help="training wall-time budget, whatever set-up takes "
                   "(default: what set-up and scoring leave of --total-minutes); a rerun continues the run for this "
                   "much more")
    d.add_argument("--total-minutes", type=number(0, above=True), default=DEMO_MINUTES,
                   help="the whole demo's wall time when --minutes is not given: training gets what set-up "
                        "(synthesizing speech) and scoring leave, so that make demo with its install fits 10 "
                        "minutes")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--scenes", type=whole(1), default=100, help="test scenes to score captions and questions on")
    d.add_argument("--utterances", type=whole(1), default=100, help="test utterances to score transcripts on")
    d.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="training precision (default: the config's, auto: bf16 where the hardware computes it "
                        "natively and, on a CPU, a timed step of the model is faster in it; else fp32)")
    d.add_argument("--device", help="where to train and score: auto (the GPU when there is one), cpu, cuda or cuda:N")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = t.add_subparsers(dest="tokenizer_command", required=True)
    tt = tsub.add_parser("train", help="train a byte-level BPE (or write the byte tokenizer)")
    tt.add_argument("--input", nargs="+", default=["builtin"], help="text files, or 'builtin'")
    tt.add_argument("--vocab-size", type=whole(1, MAX_VOCAB), default=4096)
    tt.add_argument("--kind", choices=["bpe", "byte"], default="bpe")
    tt.add_argument("--errors", choices=["strict", "replace"], default="strict",
                    help="what to do with bytes that are not UTF-8")
    tt.add_argument("--out", required=True, help="folder (gets tokenizer.json) or .json path")
    tt.set_defaults(func=cmd_tokenizer_train)

    r = sub.add_parser("pretrain", help="pretrain a GPT from a YAML config")
    r.add_argument("--data", nargs="+", action="extend", help="text files to train on (overrides data.corpus)")
    r.add_argument("--errors", choices=["strict", "replace"], help="what to do with bytes that are not UTF-8")
    _run_arguments(r)
    r.set_defaults(func=cmd_train)

    f = sub.add_parser("finetune", help="fine-tune on images, audio, text or labeled examples (captions, VQA, "
                                        "speech, classes; several at once)")
    f.add_argument("--data", nargs="+", action="extend", help="builtin:scenes, coco:CAPTIONS.json (with --images), "
                   "a JSONL manifest of {\"image\", \"text\"}, conversations, or a text task's rows: translate "
                   "{\"source\", \"target\"}, summarize {\"document\", \"summary\"}, qa {\"context\", "
                   "\"question\", \"answer\"}, classify {\"text\", \"label\"} (repeatable; overrides data.sources)")
    f.add_argument("--val", nargs="+", action="extend", help="validation sources (default: held out from --data)")
    f.add_argument("--images", help="image folder of a COCO captions file")
    f.add_argument("--columns", help="hf:PATH sources: omnigpt's keys from the dataset's columns, e.g. "
                                     "text=article,summary=highlights (data.columns)")
    f.add_argument("--on-bad-file", choices=["skip", "error"], help="a missing or unreadable image: skip it "
                                                                      "(with a warning) or stop")
    f.add_argument("--init-from", help="checkpoint to start from (a text GPT, a multimodal model, a Hugging Face "
                                       "folder); an omnigpt run's config is used when --config is not given")
    f.add_argument("--freeze", help="comma-separated parts to keep fixed: vision,audio,projector,decoder,"
                                    "cross_attention ('' for none)")
    f.set_defaults(func=cmd_train, errors=None)
    _run_arguments(f)

    g = sub.add_parser("generate", help="continue prompts with a trained model")
    g.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    g.add_argument("--prompt", required=True, type=text(), action="append", help="repeat for a batch of prompts")
    g.add_argument("--max-new-tokens", type=whole(1), default=50)
    g.add_argument("--temperature", type=number(0), default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=whole(1))
    g.add_argument("--top-p", type=number(0, 1, above=True))
    g.add_argument("--repetition-penalty", type=number(0, above=True), default=1.0)
    g.add_argument("--num-beams", type=whole(1, MAX_BEAMS), default=1)
    g.add_argument("--stop", action="append", type=text(allow_empty=False), help="stop string (repeatable)")
    g.add_argument("--seed", type=whole(0, MAX_SEED))
    g.add_argument("--truncate", action="store_true", help="cut a too-long prompt from the left")
    g.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    g.add_argument("--json", action="store_true", help="print JSON instead of text")
    g.add_argument("--chat", action="store_true", help="each prompt is a user message, asked through the chat "
                                                       "template (the tokenizer's, else the built-in one)")
    g.add_argument("--system", type=text(), help="with --chat: a system message before each prompt")
    g.add_argument("--image", action="append", help="image file for the prompts' <image> placeholders, in "
                                                     "order (repeatable)")
    g.add_argument("--audio", action="append", help="audio file for the prompts' <audio> placeholders, in "
                                                     "order (repeatable)")
    _device_arguments(g)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("caption", help="describe images with a multimodal model")
    c.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    c.add_argument("images", nargs="+", help="image files (PNG, JPEG, WebP, BMP, GIF)")
    c.add_argument("--attention-map", help="write a PNG: the image and, per word, its attention to the image "
                                           "(one file per image, numbered, when several are given)")
    c.add_argument("--prompt", type=text(allow_empty=False), default="<image> caption:", help="captioning prompt (default: %(default)s)")
    c.add_argument("--max-new-tokens", type=whole(1), default=40)
    c.add_argument("--num-beams", type=whole(1, MAX_BEAMS), default=1)
    c.add_argument("--json", action="store_true", help="print JSON instead of text")
    _device_arguments(c)
    c.set_defaults(func=cmd_caption)

    tr = sub.add_parser("transcribe", help="speech to text with a model that has an audio encoder")
    tr.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    tr.add_argument("audio", nargs="+", help="audio files (WAV, FLAC, OGG, MP3; any rate and channels)")
    tr.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt",
                    help="json, srt and vtt give timed segments")
    tr.add_argument("--output-dir", help="write NAME.FORMAT per audio file here instead of printing")
    tr.add_argument("--num-beams", type=whole(1, MAX_BEAMS), default=1, help="beam search at temperature 0")
    tr.add_argument("--max-new-tokens", type=whole(1), default=48, help="per window")
    tr.add_argument("--window", type=number(0, above=True), default=30.0,
                    help="seconds of speech decoded at once (at most; the model may allow less)")
    tr.add_argument("--overlap", type=number(0), default=1.0, help="seconds shared by the windows of a long stretch")
    tr.add_argument("--temperatures", type=_temperatures,
                    help="tried in turn while a window's output looks degenerate (default 0,0.2,0.4,0.6,0.8,1)")
    tr.add_argument("--no-fallback", action="store_true", help="decode once, at temperature 0")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_arguments(tr)
    tr.set_defaults(func=cmd_transcribe)

    ch = sub.add_parser("chat", help="talk with a model: text turns with history, /image and /audio, streamed")
    ch.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    ch.add_argument("--max-new-tokens", type=whole(1), default=64)
    ch.add_argument("--temperature", type=number(0), default=0.0, help="0: greedy")
    ch.add_argument("--top-k", type=whole(1))
    ch.add_argument("--top-p", type=number(0, 1, above=True))
    ch.add_argument("--repetition-penalty", type=number(0, above=True), default=1.0)
    ch.add_argument("--seed", type=whole(0, MAX_SEED))
    ch.add_argument("--system", type=text(), help="a system message before the conversation (asks through the "
                                                  "chat template: the tokenizer's, else the built-in one)")
    _device_arguments(ch)
    ch.set_defaults(func=cmd_chat, num_beams=1, stop=None, truncate=False)

    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat completions, completions) with "
                                      "continuous batching")
    sv.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    sv.add_argument("--port", type=whole(1, 65535), default=8000)
    sv.add_argument("--api-key", help="clients must send 'Authorization: Bearer KEY' (default: $OMNIGPT_API_KEY; "
                                      "none: no key needed)")
    sv.add_argument("--max-batch", type=whole(1), default=16, help="sequences decoded together")
    sv.add_argument("--max-queue", type=whole(0), default=64, help="requests that may wait for a free row (0: none wait); more get 429")
    sv.add_argument("--media-root", help="folder whose files image_url parts may name (without it: data: URLs only)")
    sv.add_argument("--name", help="the model id clients send (default: the checkpoint's folder name)")
    _device_arguments(sv)
    sv.set_defaults(func=cmd_serve)

    cf = sub.add_parser("compare-fusion", help="train a classifier per fusion strategy and compare them")
    cf.add_argument("--config", required=True, help="YAML file with a classifier section, or a shipped config name")
    cf.add_argument("--out", required=True, help="folder: one run per strategy, results.md/json, fusion.png")
    cf.add_argument("--strategies", help="comma-separated (default: concat,weighted_sum,gated,product,attention,early)")
    cf.add_argument("--minutes", type=number(0, above=True),
                    help="training budget per strategy (default: the config's)")
    cf.add_argument("--test", help="test manifest (default: the built-in task's test split)")
    cf.add_argument("--init-from", help="a trained run (omni model or text GPT) every strategy's encoders start from")
    cf.add_argument("--quiet", action="store_true", help="no progress bars")
    cf.set_defaults(func=cmd_compare_fusion)

    k = sub.add_parser("classify", help="label an example (text, image and/or audio) with a trained classifier")
    k.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    k.add_argument("--text", type=text(allow_empty=False))
    k.add_argument("--image", help="image file")
    k.add_argument("--audio", help="audio file")
    _device_arguments(k)
    k.set_defaults(func=cmd_classify)

    x = sub.add_parser("export", help="write a run's language model as a Hugging Face folder (transformers' "
                                      "AutoModelForCausalLM and AutoTokenizer load it)")
    x.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    x.add_argument("--out", required=True, help="folder to write config.json, model.safetensors and the tokenizer to")
    x.add_argument("--adapter", help="LoRA adapters to merge into the exported weights")
    x.set_defaults(func=cmd_export)

    mg = sub.add_parser("merge-adapter", help="fold LoRA adapters into their base's weights: a plain checkpoint")
    mg.add_argument("--checkpoint", required=True, help="a LoRA run, or the base checkpoint (with --adapter)")
    mg.add_argument("--adapter", help="adapters to put onto --checkpoint first (a LoRA run or an adapter folder)")
    mg.add_argument("--out", required=True, help="new run folder for the merged checkpoint")
    mg.set_defaults(func=cmd_merge_adapter)

    a = sub.add_parser("assemble", help="an omni model from pretrained parts (Hugging Face folders): a language "
                                        "model, a CLIP/SigLIP vision tower, a Whisper encoder, new projectors")
    a.add_argument("--lm", required=True, help="language model folder (gpt2, llama, qwen2, mistral)")
    a.add_argument("--vision", help="CLIP or SigLIP folder")
    a.add_argument("--audio", help="Whisper folder")
    a.add_argument("--config", help="base config: data, training, fusion, and token reduction (vision.reduce, "
                                    "vision.feature_layer, audio.pool)")
    a.add_argument("--seed", type=whole(0, MAX_SEED), default=0, help="for the new projectors")
    a.add_argument("--out", required=True, help="new run folder (its step-0 checkpoint)")
    a.set_defaults(func=cmd_assemble)

    sd = sub.add_parser("speech-data", help="write the built-in speech set to disk (WAV + JSONL manifest)")
    sd.add_argument("--out", required=True)
    sd.add_argument("--hours", type=number(0, above=True), default=1.0)
    sd.add_argument("--count", type=whole(1, MAX_UTTERANCES), help="utterances (instead of --hours)")
    sd.add_argument("--split", choices=["train", "val", "test"], default="train")
    sd.add_argument("--seed", type=whole(0, MAX_SEED), default=0)
    sd.set_defaults(func=cmd_speech_data)

    e = sub.add_parser("evaluate", help="perplexity; caption, VQA, WER or classification scores (by the model "
                                        "and --task)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--task", choices=["text", "caption", "vqa", "caption+vqa", "transcribe", "classify", "all",
                                      "translate", "summarize", "qa"],
                   help="default: text for a text GPT, caption+vqa with an image encoder, transcribe with audio, "
                        "all with both; classify: the label written after a text ({\"text\", \"label\"} rows), or "
                        "audio classes asked with '<audio> class:'; all: every built-in task the run learned "
                        "(scenes, speech, held-out text), as the demo scores them; translate (BLEU, chrF), "
                        "summarize (ROUGE), qa (SQuAD exact match, F1): --data of that task's JSONL rows")
    e.add_argument("--columns", help="an hf:PATH --data: omnigpt's keys from the dataset's columns, e.g. "
                                     "text=article,summary=highlights (default: the run's data.columns)")
    e.add_argument("--data", help="text: a text file (default: the run's validation split); caption/vqa: "
                                  "builtin:scenes (default), coco:CAPTIONS.json with --images, or a JSONL manifest; "
                                  "transcribe: builtin:speech (default), librispeech:DIR, or a JSONL manifest; "
                                  "classify: a JSONL or CSV file of {\"text\", \"label\"} rows, audiofolder:DIR or "
                                  "a JSONL manifest of {\"audio\", \"label\"}; translate: {\"source\", \"target\"} "
                                  "rows; summarize: {\"document\", \"summary\"}; qa: {\"context\", \"question\", "
                                  "\"answer\"}")
    e.add_argument("--positive", type=text(allow_empty=False),
                   help="classify (text): the class to flag (e.g. toxic): each label is scored by the model's "
                        "probability of writing it, and a row is flagged, and predicted positive, when this "
                        "class's probability reaches --threshold; prints the flagged share of each class")
    e.add_argument("--threshold", type=number(0, 1), help="with --positive: the probability that flags a row "
                                                          "(default 0.5)")
    e.add_argument("--plot", help="classify: where to write the confusion matrix PNG (default: RUN/confusion.png)")
    e.add_argument("--images", help="image folder of a COCO captions file")
    e.add_argument("--split", default="test", choices=["train", "val", "test", "compositional"],
                   help="built-in scene split (default: test)")
    e.add_argument("--limit", type=whole(1), help="at most this many images (built-in scenes: 500) and questions")
    e.add_argument("--on-bad-file", choices=["skip", "error"])
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--errors", choices=["strict", "replace"])
    _device_arguments(e)
    e.set_defaults(func=cmd_evaluate)
    return p


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="where the model runs: auto (the GPU when there is one), "
                                                         "cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="the model's weights and activations: auto is bf16 on a GPU that has it, else fp32")
    parser.add_argument("--adapter", help="LoRA adapters to put onto the checkpoint (a LoRA run, or a folder "
                                          "with adapter.safetensors and adapter.json)")


def _run_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("--config", help="YAML file, or a shipped config name such as text-tiny")
    r.add_argument("--out", required=True, help="run folder")
    r.add_argument("--max-steps", type=whole(1), help="length of the run (overrides train.max_steps)")
    r.add_argument("--minutes", type=number(0, above=True), help="wall-time budget (overrides train.max_minutes)")
    r.add_argument("--stop-at-step", type=whole(1), help="stop early at this step, keeping the schedule of max-steps")
    r.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    r.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="overrides train.precision; auto: bf16 where the hardware computes it natively (on a "
                        "CPU: and a timed step of the model is faster in it), fp16 with a gradient scaler on "
                        "older GPUs, fp32 otherwise")
    r.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help=argparse.SUPPRESS)
    r.add_argument("--device", help="overrides train.device: auto (the GPU when there is one), cpu, cuda or cuda:N")
    r.add_argument("--optimizer", choices=["adamw", "muon"],
                   help="overrides train.optimizer: adamw, or muon (orthogonalized updates for the Transformer's "
                        "hidden matrices, AdamW for the rest; the same lr and weight decay)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config settings, e.g. train.lr=3e-4 train.lora.rank=8 (checked like the YAML)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    from .config import ConfigError
    from .data.builtin.speech import SpeechError
    from .data.text import DataError
    from .evaluate import EvaluationError
    from .extras import MissingExtraError
    from .generate import GenerationError
    from .hardware import HardwareError
    from .tokenizer import TokenizerError
    from .checkpoint import CheckpointError
    from .interop.folder import HFError

    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        args.func(args)
    except (CommandError, ConfigError, GenerationError, HardwareError, EvaluationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
    except (DataError, TokenizerError, CheckpointError, SpeechError, FloatingPointError, MissingExtraError,
            HFError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(FAILURE) from None
    except OSError as exc:  # a full disk, a read-only folder, an output path under a file
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        raise SystemExit(FAILURE) from None
    except (ValueError, RuntimeError, MemoryError) as exc:
        # Not one of the errors above, so a case omnigpt does not check for yet: one line, and the
        # traceback with OMNIGPT_DEBUG=1 for a bug report.
        if os.environ.get("OMNIGPT_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (run with OMNIGPT_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(FAILURE) from None
    except KeyboardInterrupt:
        hint = {"pretrain": ": resume the run with --resume", "finetune": ": resume the run with --resume",
                "compare-fusion": ": run the same command again to resume"}.get(args.command, "")
        print(f"\ninterrupted{hint}", file=sys.stderr)
        raise SystemExit(130) from None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr: what it says, not the source line that raised it."""
    print(f"warning: {message}", file=file or sys.stderr)


def _os_error(exc: OSError) -> str:
    """'PATH: what went wrong' (Python's own form starts with '[Errno N]', which tells a user nothing)."""
    if isinstance(exc, FileExistsError) and exc.filename is not None and Path(exc.filename).is_file():
        return f"{exc.filename} is a file; a folder is needed there (give another output path)"
    if isinstance(exc, NotADirectoryError) and exc.filename is not None:
        return f"{exc.filename}: part of this path is a file, not a folder (give another output path)"
    what = exc.strerror or str(exc)
    if exc.filename is not None and str(exc.filename) not in what:
        return f"{exc.filename}: {what}"
    return what


if __name__ == "__main__":
    main()
