"""Real text that every Debian-like machine already holds: the gettext catalogs (`*.mo`) under /usr/share,
where each program's English messages sit beside their translations by people ("could not open file %s" ->
"konnte Datei %s nicht öffnen"). No download: the catalogs come with the installed packages.

- `translation_pairs(lang)`: English message -> its translation, one pair per distinct message (the most
  common translation where programs disagree), messages of 3+ words and at most 160 characters; the ISO
  code lists (country and language names) are left out, being names rather than sentences.
- `language_rows(langs)`: translated messages labelled with their language, for language identification.
- `split_by_message`: train/val/test by a hash of the English message, so no message (nor any of its
  translations) is in two splits.

The counts depend on the packages installed (this project's machines: about 34,500 English-German pairs).
"""
from __future__ import annotations

import gettext
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, TypeVar

T = TypeVar("T")
ROOTS = (Path("/usr/share/locale"), Path("/usr/share"))


def catalogs(lang: str, roots: Iterable[Path] = ROOTS) -> list[Path]:
    """The machine's compiled catalogs for one language, ISO code lists left out, each file once."""
    found = set()
    for root in roots:
        if root.is_dir():
            found.update(p.resolve() for p in root.glob(f"**/{lang}/LC_MESSAGES/*.mo"))
    return sorted(p for p in found if not p.name.startswith("iso_"))


def _clean(text: str) -> str:
    return " ".join(text.split())


def translation_pairs(lang: str, min_words: int = 3, max_chars: int = 160,
                      roots: Iterable[Path] = ROOTS) -> dict[str, str]:
    """English message -> translation over all of the language's catalogs (see the module's docstring)."""
    seen: dict[str, Counter] = defaultdict(Counter)
    for path in catalogs(lang, roots):
        try:
            with open(path, "rb") as f:
                catalog = gettext.GNUTranslations(f)._catalog
        except (OSError, UnicodeDecodeError, LookupError):  # unreadable, not a catalog, or an unknown charset
            continue
        for key, value in catalog.items():
            # Plural forms have (msgid, n) keys; "\x04" joins a context to its message; "" is the header.
            if not isinstance(key, str) or not key or "\x04" in key or not value:
                continue
            source, target = _clean(key), _clean(value)
            if len(source.split()) < min_words or len(source) > max_chars or len(target) > 2 * max_chars:
                continue
            if source != target:
                seen[source][target] += 1
    return {source: targets.most_common(1)[0][0] for source, targets in sorted(seen.items())}


def language_rows(langs: list[str], per_language: int,
                  roots: Iterable[Path] = ROOTS) -> list[tuple[str, str, str]]:
    """(English message, translation, language) rows: up to per_language messages per language, taken in
    the order of the messages' hashes so that every language draws from the same spread of programs."""
    rows = []
    for lang in langs:
        pairs = translation_pairs(lang, roots=roots)
        chosen = sorted(pairs, key=lambda s: zlib.crc32(s.encode()))[:per_language]
        rows += [(source, pairs[source], lang) for source in chosen]
    return rows


def split_by_message(rows: list[T], key, held_out: int) -> tuple[list[T], list[T], list[T]]:
    """(train, val, test): about held_out rows each for val and test, chosen by a hash of key(row), so a
    message is in one split only, whatever the order or number of rows."""
    share = held_out / max(1, len(rows))
    parts: tuple[list, list, list] = ([], [], [])
    for row in rows:
        u = zlib.crc32(key(row).encode(), 0x5EED) / 2**32  # salted: language_rows picks by the plain hash
        parts[1 if u < share else 2 if u < 2 * share else 0].append(row)
    return parts
