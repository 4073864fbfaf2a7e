"""The post shapes `mediad import` reads, and the files it reads them from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mediad.commands import importer
from mediad.commands.importer import Media

MP4_LOW: dict[str, Any] = {
    "bitrate": 256000,
    "content_type": "video/mp4",
    "url": "https://video.twimg.com/v/low.mp4",
}
MP4_HIGH: dict[str, Any] = {
    "bitrate": 2176000,
    "content_type": "video/mp4",
    "url": "https://video.twimg.com/v/hi.mp4",
}
M3U8: dict[str, Any] = {
    "content_type": "application/x-mpegURL",
    "url": "https://video.twimg.com/v/pl.m3u8",
}


def media(document: Any) -> list[list[Media | None]]:
    return list(importer.posts_of(document))


def test_seed_001_post_with_one_image_many_images_and_a_video() -> None:
    posts = [
        {"post_id": "p-1", "media": {"type": "image", "url": "https://cdn.example/a.jpg"}},
        {
            "post_id": "p-2",
            "media": {
                "type": "images",
                "images": [{"url": "https://cdn.example/b.jpg"}, {"url": ""}, {"alt": "no url"}],
            },
        },
        {"id": 3, "media": {"type": "video", "url": "https://cdn.example/c.mp4"}},
        {"post_id": "p-4", "text": "no media at all"},
    ]
    assert media(posts) == [
        [Media("p-1", "https://cdn.example/a.jpg", "image")],
        [Media("p-2", "https://cdn.example/b.jpg", "image"), None, None],
        [Media("3", "https://cdn.example/c.mp4", "video")],
        [],
    ]


def test_seed_000_output_lists_photos_and_videos() -> None:
    document = {
        "tweet_id": 1790000000000000000,
        "media": [
            {"url": "https://pbs.twimg.com/media/original.jpg", "type": "photo"},
            {"url": "https://video.twimg.com/x.mp4", "type": "video"},
        ],
    }
    assert media(document) == [
        [
            Media("1790000000000000000", "https://pbs.twimg.com/media/original.jpg", "image"),
            Media("1790000000000000000", "https://video.twimg.com/x.mp4", "video"),
        ]
    ]


def test_twitter_v1_tweet_photos_and_video_variants() -> None:
    tweet = {
        "id": 1790000000000000001,
        "id_str": "1790000000000000001",
        "entities": {"media": [{"type": "photo", "media_url_https": "https://ignored/x.jpg"}]},
        "extended_entities": {
            "media": [
                {"type": "photo", "media_url_https": "https://pbs.twimg.com/media/A.jpg"},
                {
                    "type": "video",
                    "media_url_https": "https://pbs.twimg.com/thumb.jpg",
                    "video_info": {"variants": [MP4_LOW, M3U8, MP4_HIGH]},
                },
                {
                    "type": "animated_gif",
                    "video_info": {"variants": [MP4_LOW]},
                },
            ]
        },
    }
    [[photo, video, gif]] = media(tweet)
    assert photo == Media(
        "1790000000000000001", "https://pbs.twimg.com/media/A.jpg", "image", "twitter"
    )
    # The row keeps every variant (the download stage chooses again); its URL is the best one.
    assert video == Media(
        "1790000000000000001", MP4_HIGH["url"], "video", "twitter", [MP4_LOW, M3U8, MP4_HIGH]
    )
    assert gif is not None and (gif.media_type, gif.media_url) == ("gif", MP4_LOW["url"])


def test_twitter_v2_response_matches_media_keys() -> None:
    response = {
        "data": [
            {"id": "10", "attachments": {"media_keys": ["3_1", "7_2"]}},
            {"id": "11", "text": "no attachments"},
            {"id": "12", "attachments": {"media_keys": ["3_9"]}},  # not in includes
        ],
        "includes": {
            "media": [
                {"media_key": "3_1", "type": "photo", "url": "https://pbs.twimg.com/media/B.jpg"},
                {
                    "media_key": "7_2",
                    "type": "video",
                    "variants": [
                        {
                            "bit_rate": 632000,
                            "content_type": "video/mp4",
                            "url": "https://v/lo.mp4",
                        },
                        {
                            "bit_rate": 950000,
                            "content_type": "video/mp4",
                            "url": "https://v/hi.mp4",
                        },
                    ],
                },
            ]
        },
    }
    [first, second, third] = media(response)
    assert [(m.post_id, m.media_url, m.media_type) for m in first if m] == [
        ("10", "https://pbs.twimg.com/media/B.jpg", "image"),
        ("10", "https://v/hi.mp4", "video"),
    ]
    assert second == third == []


def test_a_single_v2_post_object_is_one_post() -> None:
    response = {
        "data": {"id": "20", "attachments": {"media_keys": ["3_1"]}},
        "includes": {"media": [{"media_key": "3_1", "type": "photo", "url": "https://x/c.png"}]},
    }
    assert media(response) == [[Media("20", "https://x/c.png", "image", "twitter")]]


def test_files_hold_one_value_or_json_lines(tmp_path: Path) -> None:
    single = tmp_path / "one.json"
    single.write_text(json.dumps([{"post_id": "a"}, {"post_id": "b"}]))
    lines = tmp_path / "many.jsonl"
    lines.write_text('{"post_id": "c"}\n\n{"post_id": "d"}\n')
    assert importer.documents(single) == [[{"post_id": "a"}, {"post_id": "b"}]]
    assert importer.documents(lines) == [{"post_id": "c"}, {"post_id": "d"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html>not json</html>", "not JSON"),
        ('{"post_id": "c"}\n{"post_id": \n', "line 2: not JSON"),
        ("", "not JSON"),
    ],
)
def test_a_file_that_is_not_json_is_named_clearly(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(importer.ImportFileError, match=message):
        importer.documents(path)


def test_unreadable_file_is_an_import_error(tmp_path: Path) -> None:
    with pytest.raises(importer.ImportFileError, match="cannot read it"):
        importer.documents(tmp_path / "missing.json")


def test_directories_contribute_their_json_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.jsonl", "a.json", "notes.txt", "b/1.ndjson"):
        (tmp_path / name).write_text("{}")
    extra = tmp_path / "given.txt"
    assert importer.files_in([str(tmp_path), str(extra)]) == [
        tmp_path / "a.json",
        tmp_path / "b/1.ndjson",
        tmp_path / "b/2.jsonl",
        extra,
    ]
