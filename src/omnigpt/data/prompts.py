"""How each task is asked: the prompts the built-in and file data train with, and that generation, chat,
evaluation and transcription use to ask the same questions."""
from __future__ import annotations

from typing import Sequence

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


def example_text(prompt: str, target: str, turns: Sequence[tuple[str, str]] = ()) -> str:
    """An example's text as its tokens run: the prompt, the target, then each further turn's prompt and
    target. A BPE learns its words from these, so that a prompt's words get whole tokens where they stand
    (` caption`, ` question` after an answer), not the pieces that a bare `caption:` would leave them."""
    return prompt + target_text(target) + "".join(p + target_text(t) for p, t in turns)


# Text tasks (`data.text_tasks`): each field on its own line, named, and the target after the last name.
def translate_prompt(source: str, source_lang: str = "source", target_lang: str = "target") -> str:
    """The source under its language's name, then the target language's name: the translation follows."""
    return f"{source_lang}: {source}\n{target_lang}:"


def summarize_prompt(document: str) -> str:
    return f"document: {document}\nsummary:"


def qa_prompt(context: str, question: str) -> str:
    return f"context: {context}\nquestion: {question}\nanswer:"


def text_classify_prompt(text: str) -> str:
    """What a generator is asked to label a text with: the label follows (`target_text`)."""
    return f"text: {text}\nlabel:"
