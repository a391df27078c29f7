"""How each task is asked: the prompts the built-in and file data train with, and that generation, chat,
evaluation and transcription use to ask the same questions."""
from __future__ import annotations

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

