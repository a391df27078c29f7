"""An interactive session with a trained model: text turns with history, images and audio attached to a
turn, streamed replies.

A model whose tokenizer has a chat template (a run trained on conversations, or a pretrained chat model)
is asked through it: the history as user and assistant messages (after an optional system message), then
the new message, with the template's generation prompt (see `data.conversations`). Other models continue
plain text: each turn's prompt is the history (earlier messages and replies, each reply closed by the
end-of-text token's text) followed by the new message. An attached image (audio clip) goes where the message says
`<image>` (`<audio>`), else in front of it. When the history no longer fits the context with the reply,
the oldest turns are dropped whole, so no image or clip is ever cut in half.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, TextIO

from torch import nn

from .data.audio import AudioError, load_audio
from .data.conversations import ChatTemplate
from .data.image import ImageError, load_image
from .extras import MissingExtraError
from .generate import GenerationConfig, GenerationError, PromptTooLongError, stream
from .tokenizer import Tokenizer, TokenizerError

HELP = """commands:
  /image PATH   attach an image to your next message (it goes where the message says <image>, else first)
  /audio PATH   attach an audio file to your next message (likewise with <audio>)
  /reset        forget the conversation
  /help         this text
  /quit         leave (so does an empty line at end of input, or Ctrl-D)"""


@dataclass
class Turn:
    message: str  # with its <image>/<audio> placeholders
    reply: str
    images: list = field(default_factory=list)
    audio: list = field(default_factory=list)


class ChatSession:
    def __init__(self, model: nn.Module, tokenizer: Tokenizer, config: Optional[GenerationConfig] = None,
                 system: Optional[str] = None):
        self.model, self.tokenizer = model, tokenizer
        self.config = config or GenerationConfig(max_new_tokens=64)
        self.history: list[Turn] = []
        self.separator = tokenizer.decode([tokenizer.eos_id]) if tokenizer.eos_id is not None else "\n"
        self.template = ChatTemplate.of(tokenizer) if tokenizer.chat_template or system else None
        self.system = system

    def reset(self) -> None:
        self.history.clear()

    def _placed(self, message: str, images: list, audio: list) -> str:
        for tag, items in (("<audio>", audio), ("<image>", images)):
            missing = len(items) - message.count(tag)
            if missing < 0:
                raise GenerationError(f"the message has {message.count(tag)} {tag} but {len(items)} "
                                      f"{'image(s)' if tag == '<image>' else 'clip(s)'} are attached")
            message = (tag + " ") * missing + message
        return message

    def _prompt(self, turns: list[Turn], message: str) -> str:
        if self.template is None:
            return "".join(f"{t.message}{t.reply}{self.separator}" for t in turns) + message
        return self.template.prompt(chat_messages([(t.message, t.reply.strip()) for t in turns], message,
                                                  self.system))

    def send(self, message: str, images: Optional[list] = None, audio: Optional[list] = None) -> Iterator[str]:
        """Stream the reply to a message (with attached images / audio clips); the turn joins the history."""
        images, audio = list(images or []), list(audio or [])
        message = self._placed(message, images, audio)
        turns = list(self.history)
        while True:
            all_images = [im for t in turns for im in t.images] + images
            all_audio = [a for t in turns for a in t.audio] + audio
            pieces = stream(self.model, self.tokenizer, self._prompt(turns, message), self.config,
                            images=all_images or None, audio=all_audio or None)
            try:
                first = next(pieces, "")
                break
            except PromptTooLongError as exc:
                if not turns:  # the message alone does not fit: chat has its own advice
                    raise PromptTooLongError(exc.problem, "shorten the message or lower --max-new-tokens") from None
                turns.pop(0)  # the oldest turn goes whole, images and clips with it
        self.history = turns
        reply = first
        yield first
        for piece in pieces:
            reply += piece
            yield piece
        self.history.append(Turn(message, reply, images, audio))


def chat_messages(turns: list[tuple[str, str]], message: str, system: Optional[str] = None) -> list[dict]:
    """(message, reply) turns and a new message as the messages a chat template renders."""
    out = [{"role": "system", "content": system}] if system else []
    for asked, replied in turns:
        out += [{"role": "user", "content": asked}, {"role": "assistant", "content": replied}]
    return out + [{"role": "user", "content": message}]


def repl(session: ChatSession, read: Optional[Callable[[str], str]] = None, out: Optional[TextIO] = None) -> None:
    """Read messages and commands (default: `input`) until /quit or end of input; print streamed replies
    (default: to stdout)."""
    read = read or input
    out = out or sys.stdout
    images: list = []
    audio: list = []
    hearing = session.model.audio_config if "audio" in session.model.accepts else None
    rate, longest = (hearing.sample_rate, hearing.max_seconds) if hearing else (16000, None)
    print("omnigpt chat: type a message; /help lists the commands", file=out)
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: leave
            print(file=out)
            return
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, arg = text.partition(" ")
            arg = arg.strip()
            if command == "/quit":
                return
            if command == "/help":
                print(HELP, file=out)
            elif command == "/reset":
                session.reset()
                images, audio = [], []
                print("(conversation forgotten)", file=out)
            elif command in ("/image", "/audio"):
                if not arg:
                    print(f"usage: {command} PATH", file=out)
                    continue
                if command[1:] not in session.model.accepts:
                    print(f"error: this model does not take {command[1:]} (it reads "
                          f"{', '.join(sorted(session.model.accepts))})", file=out)
                    continue
                try:
                    if command == "/image":
                        images.append(load_image(Path(arg)))
                    else:
                        audio.append(load_audio(Path(arg), rate, max_seconds=longest))
                except (ImageError, AudioError, MissingExtraError) as exc:
                    print(f"error: {exc}", file=out)
                    continue
                print(f"(attached {arg} to your next message)", file=out)
            else:
                print(f"unknown command {command}; /help lists them", file=out)
            continue
        try:
            for piece in session.send(text, images, audio):
                out.write(piece)
                out.flush()
            out.write("\n")
        except (GenerationError, TokenizerError) as exc:  # e.g. a prompt too long, bytes that are not UTF-8
            print(f"error: {exc}", file=out)
        except KeyboardInterrupt:  # Ctrl-C while a reply streams: stop it, keep the session (not the turn)
            print("\n(reply stopped)", file=out)
        images, audio = [], []
