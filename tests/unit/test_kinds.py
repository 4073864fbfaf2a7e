"""Declared media types: the five types, the aliases scrapers write, and nothing else."""

from __future__ import annotations

import pytest

from mediad.media import kinds


@pytest.mark.parametrize("media_type", sorted(kinds.MEDIA_TYPES))
def test_each_media_type_is_its_own_canonical_name(media_type: str) -> None:
    """image, video, gif, audio and document stand for themselves."""
    assert kinds.canonical(media_type) == media_type


@pytest.mark.parametrize(
    ("alias", "media_type"), [("photo", "image"), ("images", "image"), ("animated_gif", "gif")]
)
def test_scrapers_aliases_name_a_media_type(alias: str, media_type: str) -> None:
    """Twitter's photo and animated_gif, and seed 001's images, name one of the five types."""
    assert kinds.canonical(alias) == media_type


@pytest.mark.parametrize("media_type", ["sticker", "", "Image", "PHOTO", "image "])
def test_anything_else_is_unknown(media_type: str) -> None:
    """Unknown names, the empty string and other spellings are no media type."""
    assert kinds.canonical(media_type) is None
