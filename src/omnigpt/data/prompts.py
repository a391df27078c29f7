"""How each task is asked: the prompts the built-in and file data train with, and that generation, chat,
evaluation and transcription use to ask the same questions."""
from __future__ import annotations

from typing import Optional

from ..config import ClassifierConfig
from ..tokenizer import Tokenizer

CAPTION_PROMPT = "<image> caption:"
TRANSCRIBE_PROMPT = "<audio> transcript:"  # what speech recognition is asked with; the transcript follows
CLASSIFY_PROMPT = "<audio> class:"  # what audio classification is asked with; the class label follows


def vqa_prompt(question: str) -> str:
    """The question comes before the image: in a causal decoder the image's tokens can then be read in the
    light of the question (which objects it asks about), which makes counting and existence questions
    learnable much sooner than with the image first."""
    return f"question: {question} <image> answer:"


def followup_prompt(question: str) -> str:
    """A further question about the image already in the sequence (after the previous answer's end)."""
    return f" question: {question} answer:"


def target_text(text: str) -> str:
    """The training target that follows a prompt: a caption or an answer, after one space."""
    return " " + text


def template_ids(config: ClassifierConfig, tokenizer: Optional[Tokenizer]) -> list[list[int]]:
    """Token ids of early fusion's template words: those before the first placeholder, then those after each."""
    prefix, spans = config.early_spans()
    pieces = [prefix] + [words for _, words in spans]
    if any(pieces) and tokenizer is None:
        raise ValueError(f"classifier.template {config.template!r} has words: building the model needs the tokenizer")
    return [tokenizer.encode((" " if k else "") + piece) if piece else [] for k, piece in enumerate(pieces)]
