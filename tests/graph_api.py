"""Pages of Facebook and Instagram Graph API answers, in the shapes those APIs document.

Facebook: `GET /{page-id}/posts?fields=id,message,created_time,full_picture,attachments{media,
media_type,type,target,url,subattachments}`; Instagram: `GET /{ig-user-id}/media?fields=id,
caption,media_type,media_url,thumbnail_url,permalink,timestamp,children{id,media_type,
media_url,thumbnail_url}`. Both wrap their list in `data` beside `paging`. The CDN links are
signed as the real ones are: `oh=` a hash, `oe=` the expiry as hex Unix time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# 2030-01-01T00:00:00Z and a day later, as the CDNs write them in oe=.
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)
OE = f"{int(EXPIRES.timestamp()):X}"
OE_LATER = f"{int(EXPIRES.timestamp()) + 86400:X}"


def fbcdn(name: str, oe: str = OE) -> str:
    """A Facebook CDN photo link."""
    return (
        f"https://scontent.fbkk5-1.fna.fbcdn.net/v/t39.30808-6/{name}_n.jpg"
        f"?stp=dst-jpg_s720x720&_nc_cat=1&ccb=1-7&_nc_sid=127cfc&_nc_ohc=Xq&oh=00_AfB{name}&oe={oe}"
    )


def fbvideo(name: str) -> str:
    """A Facebook CDN video link."""
    return (
        f"https://video.fbkk5-1.fna.fbcdn.net/o1/v/t2/f2/m69/{name}.mp4"
        f"?efg=eyJ2ZW5jb2RlX3RhZyI6InZ0c192b2RfdXJsZ2VuIn0&_nc_ht=video.fbkk5-1.fna&oh=00_AfC&oe={OE}"
    )


def igcdn(name: str, oe: str = OE) -> str:
    """An Instagram CDN photo link."""
    return (
        f"https://scontent.cdninstagram.com/v/t51.29350-15/{name}_n.jpg"
        f"?stp=dst-jpg_e35&_nc_ht=scontent.cdninstagram.com&_nc_cat=1&oh=00_AfD{name}&oe={oe}"
    )


def igvideo(name: str) -> str:
    """An Instagram CDN video link."""
    return (
        f"https://scontent.cdninstagram.com/o1/v/t16/f1/m82/{name}.mp4"
        f"?efg=eyJxZV9ncm91cHMiOiJbXCJpZ193ZWJfZGVsaXZlcnlcIl0ifQ&_nc_ht=scontent.cdninstagram.com"
        f"&oh=00_AfE&oe={OE}"
    )


def _photo(src: str, target: str) -> dict[str, Any]:
    return {
        "media": {"image": {"height": 720, "src": src, "width": 720}},
        "target": {"id": target, "url": f"https://www.facebook.com/photo.php?fbid={target}"},
        "type": "photo",
        "url": f"https://www.facebook.com/photo.php?fbid={target}",
    }


FACEBOOK_PAGE_POSTS: dict[str, Any] = {
    "data": [
        {
            # An album of three photos; full_picture is its first photo again.
            "id": "104259875185493_187431583534960",
            "created_time": "2024-05-02T09:14:31+0000",
            "message": "Three photos from the launch",
            "full_picture": fbcdn("album1"),
            "attachments": {
                "data": [
                    {
                        "media": {"image": {"height": 720, "src": fbcdn("album1"), "width": 720}},
                        "media_type": "album",
                        "target": {
                            "id": "187431583534960",
                            "url": "https://www.facebook.com/media/set/?set=a.187431583534960",
                        },
                        "title": "Photos from the launch",
                        "type": "album",
                        "url": "https://www.facebook.com/media/set/?set=a.187431583534960",
                        "subattachments": {
                            "data": [
                                _photo(fbcdn("album1"), "187431550201630"),
                                _photo(fbcdn("album2", OE_LATER), "187431553534963"),
                                _photo(fbcdn("album3"), "187431556868296"),
                            ]
                        },
                    }
                ]
            },
        },
        {
            # A video: its file in media.source, its poster as media.image and full_picture.
            "id": "104259875185493_187502216861230",
            "created_time": "2024-05-03T18:02:10+0000",
            "full_picture": fbcdn("poster"),
            "attachments": {
                "data": [
                    {
                        "media": {
                            "image": {"height": 405, "src": fbcdn("poster"), "width": 720},
                            "source": fbvideo("clip"),
                        },
                        "media_type": "video",
                        "target": {
                            "id": "187502196861232",
                            "url": "https://www.facebook.com/watch/?v=187502196861232",
                        },
                        "type": "video_inline",
                        "url": "https://www.facebook.com/watch/?v=187502196861232",
                    }
                ]
            },
        },
        {
            # One photo whose attachment link differs from full_picture's (another size).
            "id": "104259875185493_187600000000001",
            "created_time": "2024-05-04T07:00:00+0000",
            "full_picture": fbcdn("single"),
            "attachments": {"data": [_photo(fbcdn("single-orig"), "187600000000002")]},
        },
        {"id": "104259875185493_187700000000003", "message": "Text only, no picture"},
    ],
    "paging": {
        "cursors": {"before": "QVFIUmZAm", "after": "QVFIUlRx"},
        "next": "https://graph.facebook.com/v19.0/104259875185493/posts?after=QVFIUlRx",
    },
}

INSTAGRAM_USER_MEDIA: dict[str, Any] = {
    "data": [
        {
            "id": "17895695668004550",
            "caption": "One photo",
            "media_type": "IMAGE",
            "media_url": igcdn("photo"),
            "permalink": "https://www.instagram.com/p/C6aBcDeF1/",
            "timestamp": "2024-05-01T10:00:00+0000",
        },
        {
            "id": "17912345678901234",
            "caption": "A reel",
            "media_type": "VIDEO",
            "media_product_type": "REELS",
            "media_url": igvideo("reel"),
            "thumbnail_url": igcdn("reel-cover"),
            "permalink": "https://www.instagram.com/reel/C6bCdEfG2/",
            "timestamp": "2024-05-02T11:00:00+0000",
        },
        {
            # A carousel: its own media_url is its first child's again.
            "id": "17987654321098765",
            "caption": "A carousel",
            "media_type": "CAROUSEL_ALBUM",
            "media_url": igcdn("slide1"),
            "permalink": "https://www.instagram.com/p/C6cDeFgH3/",
            "timestamp": "2024-05-03T12:00:00+0000",
            "children": {
                "data": [
                    {
                        "id": "17800000000000001",
                        "media_type": "IMAGE",
                        "media_url": igcdn("slide1"),
                    },
                    {
                        "id": "17800000000000002",
                        "media_type": "VIDEO",
                        "media_url": igvideo("slide2"),
                        "thumbnail_url": igcdn("slide2-cover"),
                    },
                    {
                        "id": "17800000000000003",
                        "media_type": "IMAGE",
                        "media_url": igcdn("slide3"),
                    },
                ]
            },
        },
    ],
    "paging": {
        "cursors": {"before": "QVFIUkxx", "after": "QVFIUjZA"},
        "next": "https://graph.facebook.com/v19.0/17841400000000000/media?after=QVFIUjZA",
    },
}
