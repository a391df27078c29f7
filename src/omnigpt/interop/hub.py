"""`hf:ORG/NAME[@REVISION]`: a model on the Hugging Face Hub, fetched into Hugging Face's own cache
(~/.cache/huggingface/hub; HF_HOME or HF_HUB_CACHE move it) by the optional `huggingface_hub` package, then
read as the local folder it becomes. A copy already in the cache is used without a network. Only what omnigpt
reads is fetched: configs, safetensors weights and tokenizer files (a `pytorch_model.bin` only for a model
that has no safetensors)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..extras import require
from .folder import HFError

PREFIX = "hf:"
FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]  # configs, weights, vocabularies, templates
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_name(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def local_folder(spec: str | Path, cache_dir: Optional[str | Path] = None) -> Path:
    """The local folder of `spec`: a path as it is, or for `hf:ORG/NAME[@REVISION]` the cached snapshot,
    downloaded first when the cache lacks it. HFError when that cannot be done, saying why."""
    if not is_hub_name(spec):
        return Path(spec)
    repo, _, revision = spec[len(PREFIX):].partition("@")
    if not _NAME.fullmatch(repo):
        raise HFError(f"{spec}: expected hf:ORG/NAME or hf:ORG/NAME@REVISION")
    hub, errors = require("huggingface_hub"), require("huggingface_hub.errors")
    try:
        folder = Path(hub.snapshot_download(repo, revision=revision or None, cache_dir=cache_dir, allow_patterns=FILES))
        if not any(folder.glob("*.safetensors")):  # an older model: its pickle, which is read weights-only
            folder = Path(hub.snapshot_download(repo, revision=revision or None, cache_dir=cache_dir,
                                                allow_patterns=FILES + ["pytorch_model*.bin"]))
    except errors.RevisionNotFoundError:
        raise HFError(f"{spec}: {repo} has no revision {revision!r} on the Hugging Face Hub") from None
    except errors.RepositoryNotFoundError:
        raise HFError(f"{spec}: no model {repo} on the Hugging Face Hub (a private or gated one needs "
                      f"`huggingface-cli login` first)") from None
    except errors.LocalEntryNotFoundError:
        raise HFError(f"{spec}: not in the Hugging Face cache, and the Hub cannot be reached from here: download "
                      f"it where there is a network (huggingface-cli download {repo}), or give a local folder") \
            from None
    except OSError as exc:
        raise HFError(f"{spec}: fetching from the Hugging Face Hub failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return folder
