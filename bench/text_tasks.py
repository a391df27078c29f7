"""Text tasks from scratch: translation and text classification with the shipped configs (translate-tiny,
classify-text), each trained within a time budget on generated data, scored by `evaluate --task` against a
trivial baseline in the same run.

- Translation: English sentences of a small grammar (determiner, number, adjectives, noun, verb, object,
  place) and their rendering in a made-up language with its own words, adjectives after the noun, plural
  endings and the verb at the end. Baseline: copying the source. Metrics: sacreBLEU BLEU and chrF.
- Classification: sentences about one of four topics (sport, food, weather, music), built from the topic's
  words and words shared by all, with one word in five from another topic. Baseline: the majority class.
  Metrics: accuracy and macro-F1.

Train, validation and test sentences are drawn from separate seeds (test sentences seen in training are
dropped).

With `--corpus gettext` both tasks run on real text instead, the translated messages of the machine's own
programs (bench/gettext_corpus.py): English to German (`--lang`) on every pair there is (about 34,000), and
language identification of messages in 8 languages. Prints one JSON line; progress goes to stderr.

    python bench/text_tasks.py                       # 10 minutes per task
    python bench/text_tasks.py --corpus gettext      # the same on real text
    python bench/text_tasks.py --minutes 0.3 --pairs 400 --smoke   # a quick check that it runs
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from omnigpt import Config, load_checkpoint, train
from omnigpt.evaluate import EvalOptions, evaluate_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gettext_corpus import language_rows, split_by_message, translation_pairs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

NOUNS = {"dog": "vark", "cat": "milo", "bird": "tepo", "horse": "dranu", "child": "siwa", "farmer": "gobel",
         "teacher": "lurin", "boat": "neska", "tree": "olmu", "house": "keda", "river": "ulva", "apple": "pirsa"}
ADJECTIVES = {"big": "gran", "small": "pik", "red": "rusa", "old": "vet", "happy": "jola", "quiet": "sila",
              "green": "verda", "fast": "raka"}
VERBS = {"sees": "videt", "likes": "amat", "follows": "sekut", "finds": "trovat", "paints": "pintat"}
PLACES = {"in the garden": "ko gardo", "near the river": "pri ulva", "at home": "ko keda", "on the hill": "sur kolo"}
NUMBERS = {"one": "un", "two": "du", "three": "tri", "four": "kvar"}
LANGUAGES = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "nl": "Dutch", "pt": "Portuguese",
             "sv": "Swedish", "pl": "Polish"}

TOPICS = {
    "sport": "team goal match player coach score ball field win league runner race",
    "food": "bread soup cheese cook kitchen recipe taste salt dinner bake fruit spoon",
    "weather": "rain wind cloud storm sunny cold forecast snow warm fog thunder sky",
    "music": "song guitar drum melody band concert singer piano rhythm note album choir",
}
SHARED = "the a today we they saw really very some new about after before with and then"


def noun_phrase(rnd: random.Random) -> tuple[str, str]:
    noun = rnd.choice(list(NOUNS))
    count = rnd.choice(["the", "a"] + list(NUMBERS))
    adjs = rnd.sample(list(ADJECTIVES), rnd.choice([0, 1, 1, 2]))
    plural = count in ("two", "three", "four")
    en = " ".join([count, *adjs, noun + ("s" if plural else "")])
    det = {"the": "la", "a": "na"}.get(count, NUMBERS.get(count))
    word = NOUNS[noun] + ("en" if plural else "")
    return en, " ".join([det, word, *(ADJECTIVES[a] + ("en" if plural else "") for a in adjs)])


def sentence_pair(rnd: random.Random) -> tuple[str, str]:
    """An English sentence and its translation: subject, verb, object and an optional place; the made-up
    language puts adjectives after the noun, marks plurals on both, and the verb last."""
    subj_en, subj_x = noun_phrase(rnd)
    obj_en, obj_x = noun_phrase(rnd)
    verb = rnd.choice(list(VERBS))
    place = rnd.choice([None, *PLACES])
    en = f"{subj_en} {verb} {obj_en}" + (f" {place}" if place else "")
    x = f"{subj_x} {obj_x}" + (f" {PLACES[place]}" if place else "") + f" {VERBS[verb]}"
    return en, x


def topic_sentence(rnd: random.Random) -> tuple[str, str]:
    topic = rnd.choice(list(TOPICS))
    words = []
    for _ in range(rnd.randint(6, 12)):
        r = rnd.random()
        source = TOPICS[topic] if r < 0.55 else SHARED if r < 0.8 else TOPICS[rnd.choice(list(TOPICS))]
        words.append(rnd.choice(source.split()))
    return " ".join(words), topic


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def splits(make, count: int, seed: int) -> tuple[list, list, list]:
    """(train, val, test) drawn with their own seeds; val and test hold no sentence of train."""
    train_rows = [make(random.Random(seed * 1000 + i)) for i in range(count)]
    seen = {a for a, _ in train_rows}
    held = [make(random.Random(10**9 + seed * 1000 + i)) for i in range(count // 4 + 400)]
    held = [r for r in held if r[0] not in seen]
    n = max(50, min(500, count // 10))
    return train_rows, held[:n], held[n:2 * n]


def run_task(name: str, config: str, rows: tuple, to_row, minutes: float, folder: Path, smoke: bool,
             overrides: list[str]) -> tuple:
    train_rows, val_rows, test_rows = rows
    paths = [write_rows(folder / f"{name}-{split}.jsonl", [to_row(r) for r in part])
             for split, part in (("train", train_rows), ("val", val_rows), ("test", test_rows))]
    cfg = Config.load(ROOT / "configs" / f"{config}.yaml").with_overrides(overrides)
    cfg.data.sources, cfg.data.val_sources = [str(paths[0])], [str(paths[1])]
    cfg.train.max_minutes = minutes
    if smoke:
        cfg.model.n_layer, cfg.model.n_embd, cfg.model.vocab_size = 1, 64, 600
    print(f"{name}: {len(train_rows)} train, {len(val_rows)} val, {len(test_rows)} test rows; "
          f"training for {minutes:g} min",
          file=sys.stderr)
    result = train(cfg, folder / name, progress=sys.stderr.isatty())
    ckpt = load_checkpoint(folder / name)
    task = "translate" if name == "translate" else "classify"
    scores = evaluate_checkpoint(ckpt, EvalOptions(task=task, data=str(paths[2]), progress=False))
    return result, scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="training budget per task")
    p.add_argument("--pairs", type=int, default=20000,
                   help="training rows per task (gettext: classification rows; translation takes every pair)")
    p.add_argument("--corpus", choices=["generated", "gettext"], default="generated",
                   help="generated sets, or the real messages of the machine's gettext catalogs")
    p.add_argument("--lang", default="de", help="gettext: the language to translate English into")
    p.add_argument("--tasks", default="translate,classify", help="which tasks to run, comma-separated")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for both tasks, e.g. model.n_embd=256 train.lr=5e-4")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="folder for the data and runs (default: a temporary one)")
    p.add_argument("--smoke", action="store_true", help="a 1-layer model: checks that everything runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(args.out or tempfile.mkdtemp(prefix="omnigpt-text-tasks-"))
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    from sacrebleu.metrics import BLEU, CHRF

    tasks = set(args.tasks.split(","))
    if not tasks <= {"translate", "classify"}:
        p.error(f"--tasks takes translate and/or classify, got {args.tasks!r}")
    gettext = args.corpus == "gettext"
    if "translate" in tasks and gettext:
        found = translation_pairs(args.lang)
        if len(found) < 2000:
            sys.exit(f"only {len(found)} English-{args.lang} message pairs in this machine's gettext catalogs")
        pairs = split_by_message(list(found.items()), lambda r: r[0], held_out=500)
        target_lang = LANGUAGES.get(args.lang, args.lang)
    elif "translate" in tasks:
        pairs, target_lang = splits(sentence_pair, args.pairs, 1), "Toy"
    if "classify" in tasks and gettext:
        rows = language_rows(list(LANGUAGES), per_language=args.pairs // len(LANGUAGES))
        topics = tuple([(text, lang) for _, text, lang in part]
                       for part in split_by_message(rows, lambda r: r[0], held_out=500))
    elif "classify" in tasks:
        topics = splits(topic_sentence, args.pairs, 2)
    line = {"bench": "text_tasks", "corpus": args.corpus, "minutes_per_task": args.minutes, "smoke": args.smoke,
            "overrides": args.set}
    if "translate" in tasks:
        tr, scores = run_task("translate", "translate-tiny", pairs,
                              lambda r: {"source": r[0], "target": r[1], "source_lang": "English",
                                         "target_lang": target_lang}, args.minutes, folder, args.smoke, args.set)
        sources, targets = [a for a, _ in pairs[2]], [[b for _, b in pairs[2]]]
        line["translate"] = {"steps": tr.step, "bleu": round(scores["bleu"], 2), "chrf": round(scores["chrf"], 2),
                             "copy_bleu": round(BLEU().corpus_score(sources, targets).score, 2),
                             "copy_chrf": round(CHRF().corpus_score(sources, targets).score, 2),
                             "train_rows": len(pairs[0]), "test_rows": len(pairs[2])}
    if "classify" in tasks:
        cl, scores = run_task("classify", "classify-text", topics, lambda r: {"text": r[0], "label": r[1]},
                              args.minutes, folder, args.smoke, args.set)
        majority = Counter(label for _, label in topics[0]).most_common(1)[0][0]
        line["classify"] = {"steps": cl.step, "accuracy": round(scores["accuracy"], 4),
                            "macro_f1": round(scores["macro_f1"], 4),
                            "majority_accuracy": round(sum(lab == majority for _, lab in topics[2]) / len(topics[2]), 4),
                            "train_rows": len(topics[0]), "test_rows": len(topics[2])}
    line.update(seconds=round(time.time() - t0, 1), threads=args.threads)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
