"""The media types a row may declare in `media_type`, and the other names scrapers use for them.

Both the download stage (which fails a row whose type is none of these) and `mediad import`
(which writes the type of each medium it queues) read them here. A declared type is the
scraper's word; the probe proves a file's own kind from its bytes (`info.MediaKind`), and a
declared `gif` may prove to be an image or a video.
"""

from __future__ import annotations

MEDIA_TYPES = frozenset({"image", "video", "gif", "audio", "document"})
# Twitter's API says photo and animated_gif; seed 001's posts say images for a gallery.
ALIASES = {"photo": "image", "images": "image", "animated_gif": "gif"}


def canonical(media_type: str | None) -> str | None:
    """The media type `media_type` names (itself, or what an alias stands for); None if unknown."""
    if media_type is None or media_type in MEDIA_TYPES:
        return media_type
    return ALIASES.get(media_type)
