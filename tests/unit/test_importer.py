"""The post shapes `mediad import` reads, and the files it reads them from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mediad.commands import importer
from mediad.commands.importer import Document, FileReport, Media
from tests import graph_api

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
    assert importer.documents(single) == [Document([{"post_id": "a"}, {"post_id": "b"}])]
    # A JSON Lines value keeps its line, for errors that name it.
    assert importer.documents(lines) == [
        Document({"post_id": "c"}, 1),
        Document({"post_id": "d"}, 3),
    ]


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


def _queued(document: Any) -> list[tuple[str | None, str, str, str | None, int]]:
    """(post_id, URL, media_type, platform, position) of each medium import would queue."""
    report = FileReport("page.json")
    return [
        (q.media.post_id, q.media.media_url, q.media.media_type, q.media.platform, q.position)
        for q in importer.rows_to_queue([Document(document)], report)
    ]


def test_facebook_posts_full_picture_first_then_attachments_each_url_once() -> None:
    """A Graph API page of posts: full_picture leads, then each attachment (an album by its
    subattachments, a video by its source then its poster); a URL named twice is one medium."""
    album, video, single, _ = (p["id"] for p in graph_api.FACEBOOK_PAGE_POSTS["data"])
    assert _queued(graph_api.FACEBOOK_PAGE_POSTS) == [
        (album, graph_api.fbcdn("album1"), "image", "facebook", 0),
        (album, graph_api.fbcdn("album2", graph_api.OE_LATER), "image", "facebook", 1),
        (album, graph_api.fbcdn("album3"), "image", "facebook", 2),
        (video, graph_api.fbcdn("poster"), "image", "facebook", 0),
        (video, graph_api.fbvideo("clip"), "video", "facebook", 1),
        (single, graph_api.fbcdn("single"), "image", "facebook", 0),
        (single, graph_api.fbcdn("single-orig"), "image", "facebook", 1),
    ]


def test_facebook_post_without_full_picture_and_album_without_pictures() -> None:
    """Without full_picture the first attachment leads; an album whose subattachments name no
    picture gives its own cover; a post's deprecated `source` is its video."""
    post = {
        "id": "1_2",
        "source": graph_api.fbvideo("old"),
        "attachments": {
            "data": [
                {
                    "media": {"image": {"src": graph_api.fbcdn("cover")}},
                    "type": "album",
                    "subattachments": {"data": [{"type": "photo", "target": {"id": "3"}}]},
                },
                {"type": "share", "title": "a link without a picture"},
            ]
        },
    }
    assert _queued(post) == [
        ("1_2", graph_api.fbcdn("cover"), "image", "facebook", 0),
        ("1_2", graph_api.fbvideo("old"), "video", "facebook", 1),
    ]


def test_instagram_media_photo_video_with_cover_and_carousel_children() -> None:
    """A page of IG Media: an IMAGE by media_url, a VIDEO then its thumbnail_url, a
    CAROUSEL_ALBUM by its children (a child video with its cover), all under the post's id."""
    photo, reel, carousel = (m["id"] for m in graph_api.INSTAGRAM_USER_MEDIA["data"])
    assert _queued(graph_api.INSTAGRAM_USER_MEDIA) == [
        (photo, graph_api.igcdn("photo"), "image", "instagram", 0),
        (reel, graph_api.igvideo("reel"), "video", "instagram", 0),
        (reel, graph_api.igcdn("reel-cover"), "image", "instagram", 1),
        (carousel, graph_api.igcdn("slide1"), "image", "instagram", 0),
        (carousel, graph_api.igvideo("slide2"), "video", "instagram", 1),
        (carousel, graph_api.igcdn("slide2-cover"), "image", "instagram", 2),
        (carousel, graph_api.igcdn("slide3"), "image", "instagram", 3),
    ]


def test_instagram_carousel_whose_children_lack_urls_gives_its_cover() -> None:
    """children asked for by id alone name no URL: the album's own media_url is kept."""
    album = {
        "id": "179",
        "media_type": "CAROUSEL_ALBUM",
        "media_url": graph_api.igcdn("cover"),
        "children": {"data": [{"id": "1"}, {"id": "2"}]},
    }
    assert _queued(album) == [("179", graph_api.igcdn("cover"), "image", "instagram", 0)]


def test_a_medium_listed_again_in_the_file_counts_as_already_queued() -> None:
    """The same post twice in one file (a re-scrape appended) queues its media once."""
    post = {"post_id": "p", "media": {"type": "image", "url": "https://cdn.example/a.jpg"}}
    report = FileReport("twice.jsonl")
    wanted = importer.rows_to_queue([Document(post, 1), Document(post, 2)], report)
    assert [q.media.media_url for q in wanted] == ["https://cdn.example/a.jpg"]
    assert (report.posts, report.already_queued) == (2, 1)


@pytest.mark.parametrize(
    ("post", "message"),
    [
        (
            {"post_id": "a\x00b", "media": {"url": "https://cdn.example/a.jpg"}},
            "line 7: its post_id holds a NUL character",
        ),
        (
            {"id": "x", "media_type": "IMAGE", "media_url": "https://cdn.example/\ud800.jpg"},
            "line 7: its URL holds a lone surrogate",
        ),
        (
            {"post_id": "p" * 2001, "media": {"url": "https://cdn.example/a.jpg"}},
            "line 7: its post_id is 2001 bytes long, over 2000",
        ),
        (
            {
                "post_id": "p",
                "media": {"type": "video", "url": "https://v/a.mp4", "variants": [{"u": "\x00"}]},
            },
            "line 7: its variants holds a NUL character",
        ),
    ],
)
def test_input_postgresql_would_refuse_is_named_with_its_line(
    post: dict[str, Any], message: str
) -> None:
    """Text PostgreSQL cannot store fails the file naming the line, before any insert."""
    with pytest.raises(importer.ImportFileError, match=message):
        importer.rows_to_queue([Document(post, 7)], FileReport("bad.jsonl"))


def test_a_post_of_a_whole_json_file_is_named_by_its_place() -> None:
    """In a file holding one JSON list, the bad post is named by its place in the list."""
    posts = [
        {"post_id": "ok", "media": {"url": "https://cdn.example/a.jpg"}},
        {"post_id": "bad\x00", "media": {"url": "https://cdn.example/b.jpg"}},
    ]
    with pytest.raises(importer.ImportFileError, match=r"^post 2: its post_id"):
        importer.rows_to_queue([Document(posts)], FileReport("posts.json"))
