"""The archive key template: the fields it knows, the keys it makes, the ones it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediad import config, errors
from mediad.storage import objectkeys

SHA = "ab" + "0" * 62
VALUES = {
    "sha256": SHA,
    "md5": "f" * 32,
    "ext": "jpg",
    "media_id": "med-123",
    "post_id": "p-9",
    "platform": "twitter",
    "media_type": "image",
    "year": "2026",
    "month": "03",
    "day": "07",
}


def test_default_template_is_content_addressed() -> None:
    """The default key is media/{sha256[:2]}/{sha256}.{ext}, and the same bytes give one key."""
    template = objectkeys.parse("media/{sha256[:2]}/{sha256}.{ext}")
    assert template.render(VALUES) == f"media/ab/{SHA}.jpg"
    assert objectkeys.content_addressed(template.render(VALUES), SHA)


def test_seed_001_template() -> None:
    """Seed 001's media/{year}/{month}/{media_id}.{ext} works and is keyed by row, not content."""
    template = objectkeys.parse("media/{year}/{month}/{media_id}.{ext}")
    assert template.render(VALUES) == "media/2026/03/med-123.jpg"
    assert not objectkeys.content_addressed(template.render(VALUES), SHA)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("media/{sha}.{ext}", "unknown field {sha}"),
        ("media/{sha256.upper}", "placeholder"),
        ("media/{sha256!r}", "placeholder"),
        ("media/{sha256:>10}", "placeholder"),
        ("media/{year}/{ext}", "must contain {sha256} or {media_id}"),
        ("media/{sha256[:2]}.{ext}", "must contain {sha256} or {media_id}"),
        ("/media/{sha256}", "must not start"),
        ("media//{sha256}", "must not start"),
        ("media/../{sha256}", ". or .. segments"),
        ("media/{sha256} x", "literal text"),
        ("{", "placeholder"),
    ],
)
def test_bad_templates_are_refused(template: str, message: str) -> None:
    """Unknown fields, formatting tricks and templates whose keys could collide are refused."""
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace(".", r"\.")):
        objectkeys.parse(template)


def test_config_names_the_key_template(tmp_path: Path) -> None:
    """A bad archive.key_template is a ConfigError naming the key, at load time."""
    path = tmp_path / "config.toml"
    path.write_text('[archive]\nkey_template = "media/{sha1}.{ext}"\n')
    with pytest.raises(errors.ConfigError, match=r"^archive\.key_template: unknown field"):
        config.load(path, env={})


@pytest.mark.parametrize("media_id", ["../etc", "a/b", "..", "", "x y", "é"])
def test_unsafe_values_never_enter_a_key(media_id: str) -> None:
    """A media_id that would add a segment or escape the prefix is refused, not cleaned."""
    template = objectkeys.parse("media/{media_id}.{ext}")
    with pytest.raises(objectkeys.UnsafeKeyError):
        template.render({**VALUES, "media_id": media_id})


@pytest.mark.parametrize("key", ["", "/a", "a//b", "a/./b", "a/../b", "a/", "k" * 1025])
def test_keys_that_leave_their_place_are_refused(key: str) -> None:
    """check_key refuses empty, absolute, . and .. segments and over-long keys with an error of
    mediad's own family."""
    with pytest.raises(objectkeys.UnsafeKeyError) as refused:
        objectkeys.check_key(key)
    assert isinstance(refused.value, errors.MediadError)


def test_a_missing_value_is_refused() -> None:
    """A template field the row has no value for is an error, not an empty segment."""
    with pytest.raises(objectkeys.UnsafeKeyError, match="post_id"):
        objectkeys.parse("media/{post_id}/{sha256}").render({**VALUES, "post_id": None})


def test_s3_urls_round_trip() -> None:
    """s3://bucket/key splits back into bucket and key; anything else is refused."""
    url = objectkeys.s3_url("media", f"media/ab/{SHA}.jpg")
    assert objectkeys.parse_s3_url(url) == ("media", f"media/ab/{SHA}.jpg")
    for bad in ("https://media/x", "s3://media/", "s3://UPPER/x", "s3:/media/x"):
        with pytest.raises(ValueError):
            objectkeys.parse_s3_url(bad)
