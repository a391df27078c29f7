"""Conversations in OpenAI's shape, the chat template that writes them as text, and the pieces a generator
trains on: what the model reads (system and user turns, the template's markup) and what it learns to write
(the assistant's replies, each closed by end-of-text). The loss falls on the replies only.

A JSONL row is `{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}`, where
`content` is a string or a list of parts: `{"type": "text", "text": ...}`, `{"type": "image", "image":
PATH}` (or `"image_url": PATH` / `{"url": PATH}`), `{"type": "audio", "audio": PATH}`. An image or a clip
becomes an `<image>` / `<audio>` placeholder where its part stood; a conversation holds at most one of each.
Relative paths are relative to the manifest's folder.

The template is the tokenizer's own (the Jinja `chat_template` of its `tokenizer_config.json`), else the
built-in one, which a run trained on conversations saves into its tokenizer so that `chat` and `generate
--chat` ask in the same words:

    system: You are terse.
    user: Hi
    assistant: Hello!<|eos|>user: ...

Pieces are found by rendering: the prompt of reply k is the conversation before it with the generation
prompt, the reply is what the full rendering adds after that. Where the reply's markup ends with the
end-of-text token's text, that token is the one the batch appends (so it is not learned twice).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

from .sources import OnError, Root, _check_media, _read_jsonl, check_text
from .text import DataError

ROLES = ("system", "user", "assistant")
BUILTIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}assistant: {{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ m['role'] }}: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass
class Conversation:
    """Messages ({"role", "content"} with placeholders for media), the image and clip they hold, where from."""
    messages: list[dict]
    image: Optional[Path] = None
    audio: Optional[Path] = None
    where: str = ""
    files: list[Path] = field(default_factory=list)


class ChatTemplate:
    """Renders messages as text with a Jinja chat template (sandboxed, as Hugging Face renders them)."""

    def __init__(self, template: Optional[str], eos_token: str, bos_token: str = ""):
        from jinja2 import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.source = template or BUILTIN_TEMPLATE
        self.builtin = template is None
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

        def raise_exception(message: str) -> None:
            raise DataError(f"the chat template refuses this conversation: {message}")

        env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
        try:
            self.template = env.from_string(self.source)
        except TemplateError as exc:
            raise DataError(f"the chat template is not valid Jinja: {exc}") from None
        self.eos_token, self.bos_token = eos_token, bos_token

    @classmethod
    def of(cls, tokenizer) -> "ChatTemplate":
        """The tokenizer's template, or the built-in one."""
        return cls(tokenizer.chat_template, tokenizer.specials["eos"], tokenizer.specials["bos"])

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        from jinja2 import TemplateError

        try:
            return self.template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                        eos_token=self.eos_token, bos_token=self.bos_token)
        except TemplateError as exc:
            raise DataError(f"the chat template failed on this conversation: {exc}") from None

    def pieces(self, messages: Sequence[dict]) -> list[tuple[str, str]]:
        """(prompt, reply) for each assistant message: the prompt is the text since the previous reply (the
        first: since the start), the reply the text the assistant writes, without a final end-of-text."""
        out, done = [], 0
        for k, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:k], add_generation_prompt=True)
            full = self.render(messages[:k + 1])
            if not full.startswith(before):
                raise DataError("the chat template writes an assistant turn that does not continue its own "
                                "generation prompt, so replies cannot be told apart from prompts")
            reply = full[len(before):]
            end = reply.find(self.eos_token) if self.eos_token else -1
            if end >= 0:  # the end-of-text token closes the reply: the batch appends it
                rest, reply = reply[end + len(self.eos_token):], reply[:end]
            else:
                rest = ""
            out.append((before[done:], reply))
            done = len(full) - len(rest)
        return out

    def prompt(self, messages: Sequence[dict]) -> str:
        """What the model reads before writing the next reply."""
        return self.render(messages, add_generation_prompt=True)


# ----------------------------------------------------------------------------------------------- reading
def _content(value: object, folder: Path, media: dict[str, Path]) -> str:
    """A message's content as text with placeholders; files named by parts go into `media`."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError("a message has empty 'content'")
        check_text(value, "content")
        return value
    if not isinstance(value, list) or not value:
        raise DataError(f"'content' must be a string or a non-empty list of parts, got {type(value).__name__}")
    out = []
    for part in value:
        if not isinstance(part, dict) or "type" not in part:
            raise DataError(f"a content part must be an object with a 'type', got {part!r:.80}")
        kind = part["type"]
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise DataError("a text part needs 'text' (a string)")
            check_text(text, "text")
            out.append(text)
            continue
        key = {"image": "image", "image_url": "image_url", "audio": "audio", "input_audio": "audio"}.get(kind)
        if key is None:
            raise DataError(f"unknown content part type {kind!r} (text, image, image_url, audio)")
        path = part.get(key, part.get("path"))
        if isinstance(path, dict):  # {"image_url": {"url": PATH}}
            path = path.get("url")
        if not isinstance(path, str) or not path.strip():
            raise DataError(f"an {kind} part needs a file path under {key!r}")
        modality = "audio" if key == "audio" else "image"
        if modality in media:
            raise DataError(f"a conversation holds at most one {modality}")
        media[modality] = Path(path) if Path(path).is_absolute() else folder / path
        out.append(f"<{modality}>")
    return " ".join(p for p in out if p)


def conversation_row(row: object, folder: Path, where: str) -> Conversation:
    """One JSONL row as a Conversation, or DataError saying what is wrong with it."""
    if not isinstance(row, dict):
        raise DataError(f"expected a JSON object, got {type(row).__name__}")
    if "messages" not in row:
        raise DataError("missing key 'messages'")
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list")
    media: dict[str, Path] = {}
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError("each message needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"unknown role {m['role']!r} (system, user, assistant)")
        out.append({"role": m["role"], "content": _content(m["content"], folder, media)})
    if not any(m["role"] == "assistant" for m in out):
        raise DataError("no assistant message: nothing to learn from")
    return Conversation(out, media.get("image"), media.get("audio"), where, list(media.values()))


def read_conversations(path: str | Path, on_error: OnError = "error", root: Root = None) -> list[Conversation]:
    """The conversations of a JSONL file, one per non-blank line (a bad row names the file and line; fatal or
    skipped by on_error). root: data.media_root."""
    path = Path(path)

    def row(obj: object, folder: Path, number: int) -> Conversation:
        return conversation_row(obj, folder, f"{path} line {number}")

    return _read_jsonl(path, on_error, row, _check_media, lambda c: c.files, root)
