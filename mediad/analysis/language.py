"""A cheap guess of the language of OCR text: its script, and for Latin script its commonest
words. It names a language only when the text says so plainly, and None otherwise.

Statistical identifiers (py3langid) cost about 110 MB of RSS and a second to load in every
worker, a tenth of a decoder worker's address space, for text that the OCR model (Chinese and
Latin letters) mostly reads as a few words: too dear for a guess.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# Scripts that name one language among those likely here (unicodedata name prefixes).
_SCRIPTS = (
    ("HIRAGANA", "ja"),
    ("KATAKANA", "ja"),
    ("HANGUL", "ko"),
    ("CJK UNIFIED", "zh"),
    ("GREEK", "el"),
    ("HEBREW", "he"),
    ("THAI", "th"),
    ("DEVANAGARI", "hi"),
)
# Words that make up a large part of any running text in each language.
_COMMON_WORDS = {
    "en": "the and of to is you that it for on with are this be at was have not your we from"
    " they or by our will all my what so can just now more get over",
    "es": "el los las que y un una es por con para no se del al lo como más pero sus ya muy hoy"
    " está",
    "fr": "le les des et est une du que qui pour dans pas sur au avec ce il elle nous vous sont"
    " mais plus je ne",
    "de": "der die das und ist nicht ein eine zu den mit von sich des auf für im dem auch wir ich"
    " sie nach bei noch aus",
    "it": "il di che è per non con del della gli sono si da al ma come anche più nel",
    "pt": "o os que do da em um uma para com não no na por mais dos das ao é seu sua você",
    "nl": "de het een en van is dat niet op te met voor zijn er maar ook als bij nog wat je ik",
}
_WORD_SETS = {code: frozenset(words.split()) for code, words in _COMMON_WORDS.items()}
_WORD = re.compile(r"[^\W\d_]+")
# Text with fewer letters names no language.
_MIN_LETTERS = 2
# Latin text needs this many common words, and clearly more of one language's than another's.
_MIN_HITS = 2


def guess(text: str) -> dict[str, Any] | None:
    """{"code": ISO 639-1, "confidence": 0-1} for text that plainly is one language, else None."""
    letters = [ch for ch in text if ch.isalpha()]
    if len(letters) < _MIN_LETTERS:
        return None
    counts: dict[str, int] = {}
    latin = 0
    for ch in letters:
        name = unicodedata.name(ch, "")
        if name.startswith("LATIN"):
            latin += 1
            continue
        for prefix, code in _SCRIPTS:
            if name.startswith(prefix):
                counts[code] = counts.get(code, 0) + 1
                break
    # Japanese mixes kana with Chinese characters: any real share of kana makes it Japanese.
    if counts.get("ja", 0) * 10 >= len(letters):
        return _named("ja", (counts["ja"] + counts.get("zh", 0)) / len(letters))
    if counts:
        code, count = max(counts.items(), key=lambda item: item[1])
        if count * 2 > len(letters):
            return _named(code, count / len(letters))
    if latin * 2 > len(letters):
        return _latin(text)
    return None


def _latin(text: str) -> dict[str, Any] | None:
    words = _WORD.findall(text.casefold())
    hits = {code: sum(word in common for word in words) for code, common in _WORD_SETS.items()}
    ranked = sorted(hits.items(), key=lambda item: -item[1])
    (best, most), (_, second) = ranked[0], ranked[1]
    if most < _MIN_HITS or most < 2 * second:
        return None
    return _named(best, most / (most + second))


def _named(code: str, confidence: float) -> dict[str, Any]:
    return {"code": code, "confidence": round(confidence, 3)}
