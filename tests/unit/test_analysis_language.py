"""The language guess of OCR text: named from the script or the commonest words, else None."""

from __future__ import annotations

import pytest

from mediad.analysis import language


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("the quick brown fox jumps over the lazy dog", "en"),
        ("Der schnelle braune Fuchs springt über den faulen Hund und die Katze", "de"),
        ("Le chat est sur la table avec les enfants", "fr"),
        ("El perro come la comida de los niños", "es"),
        ("Il gatto è sul tavolo con il cane della casa", "it"),
        ("O gato está na mesa com os meninos da casa", "pt"),
        ("De kat is op de tafel met het kind", "nl"),
        ("今天天气很好", "zh"),
        ("こんにちは世界です", "ja"),
        ("안녕하세요 세계", "ko"),
    ],
)
def test_plain_text_names_its_language(text: str, code: str) -> None:
    """A sentence in a language of Latin script, or text in a script of its own, is named."""
    guessed = language.guess(text)
    assert guessed is not None and guessed["code"] == code
    assert 0.5 < guessed["confidence"] <= 1.0


@pytest.mark.parametrize(
    "text",
    ["ARCHIVE 2026 MEDIA", "SALE 50% OFF", "SUMMER MARKET\nOPEN SUNDAY", "", "42", "Привет мир"],
)
def test_a_few_words_or_an_ambiguous_script_name_no_language(text: str) -> None:
    """Capitalised words, numbers and scripts shared by many languages get None, not a guess."""
    assert language.guess(text) is None
