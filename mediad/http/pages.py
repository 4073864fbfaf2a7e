"""The read-only dashboard (server-rendered Jinja2, autoescaped, no JavaScript) and its JSON API.

`/` counts per stage and status, failures by error_code with examples and the `mediad retry`
that re-queues them, and the newest media as thumbnails; `/posts/{post_id}` a post's media;
`/media/{media_id}` one medium with its metadata, analysis and event log; `/api/posts/{post_id}`
and `/api/media/{media_id}` the same as JSON (seed 002's `display_image_url` and
`has_local_image`). The best URL is `mediad url`'s choice (commands/url.py).

Post ids, URLs, errors and analysis text are input: Jinja2 escapes every value, and the URLs
shown have their signed query strings redacted as in the log. Only URLs of our own (hosted
files, derivatives, presigned archive URLs made for the reader) are followed as they are; an
original whose query carries a signature is shown redacted and never used as an image.
"""

from __future__ import annotations

import functools
import json
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from mediad import queries
from mediad.commands import url
from mediad.db import DB_ERRORS
from mediad.http.collectors import CountsCache
from mediad.net import platforms
from mediad.queries import Registry
from mediad.resources import Resources

if TYPE_CHECKING:
    import jinja2

RECENT = 48
# A post with more media than this shows the first ones (no platform comes near it).
POST_MEDIA_LIMIT = 500
FAILURE_EXAMPLES = 3


def _pretty(value: Any) -> str:
    """A JSON value for people, any URL in it redacted."""
    return platforms.redact_urls(json.dumps(value, indent=2, sort_keys=True, default=str))


@functools.cache
def _environment() -> jinja2.Environment:
    """The templates' Jinja2 environment, made at the first page: Jinja2's import and the
    environment cost every start ~30 ms, and the daemon serves /metrics far more often than a
    page (a `run --once` usually none)."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mediad.http", "templates"),
        autoescape=True,
    )
    environment.filters["redact"] = platforms.redact_urls
    # A path segment: every reserved character escaped, "/" included (a post id may hold one).
    environment.filters["quote"] = lambda value: urllib.parse.quote(str(value), safe="")
    environment.filters["pretty"] = _pretty
    return environment


def render(template: str, **values: Any) -> str:
    """One template of templates/, every value HTML-escaped."""
    return _environment().get_template(template).render(**values)


def _analysis(text: str | None) -> Any:
    """ai_analysis: a JSON document (as text), or free text from an older backend."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


class Dashboard:
    """The dashboard's pages and the JSON API, over the endpoint's own database pool."""

    def __init__(
        self,
        resources: Resources,
        pool: asyncpg.Pool[Any],
        counts: CountsCache,
        registry: Registry,
    ) -> None:
        self._config = resources.config
        self._resources = resources
        self._pool = pool
        self._counts = counts
        self._registry = registry
        self._sql = queries.plain(tuple(registry))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.index),
            web.get("/posts/{post_id}", self.post),
            web.get("/media/{media_id}", self.medium),
            web.get("/api/posts/{post_id}", self.api_post),
            web.get("/api/media/{media_id}", self.api_medium),
        ]

    # --- pages ------------------------------------------------------------------------------

    async def index(self, _request: web.Request) -> web.Response:
        report = await self._counts.fresh()
        failures = []
        try:
            recent = await self._pool.fetch(self._sql["dashboard_recent_media"], RECENT)
            # One indexed query per (stage, error_code) the counts name: a bounded few.
            for failure in (report or {}).get("failures", []):
                stage, code = failure["stage"], failure["error_code"]
                examples = await self._pool.fetch(
                    self._sql["dashboard_failure_examples"], FAILURE_EXAMPLES, stage, code
                )
                failures.append(
                    {
                        **failure,
                        "examples": [_failed_example(e) for e in examples],
                        "retry": f"mediad retry --failed --stage {stage} --error-code {code}",
                    }
                )
        except DB_ERRORS as exc:
            return _html(render("unavailable.html", error=str(exc)), status=503)
        media = [await self.describe(dict(r)) for r in recent]
        page = render(
            "index.html",
            report=report,
            stale=self._counts.stale,
            refreshed_at=self._counts.refreshed_at,
            stages=[d.name for d in self._registry],
            failures=failures,
            media=media,
        )
        return _html(page)

    async def post(self, request: web.Request) -> web.Response:
        post_id = request.match_info["post_id"]
        media = await self._post_media(post_id)
        status = 200 if media else 404
        return _html(render("post.html", post_id=post_id, media=media), status=status)

    async def medium(self, request: web.Request) -> web.Response:
        found = await self._row(request.match_info["media_id"])
        if found is None:
            page = render("missing.html", what="medium", name=request.match_info["media_id"])
            return _html(page, status=404)
        described = await self.describe(found)
        page = render(
            "media.html",
            medium=described,
            metadata=found.get("metadata") or {},
            analysis=_analysis(found.get("ai_analysis")),
            events=found.get("ai_analysis_log") or [],
            last_error=found.get("last_error"),
        )
        return _html(page)

    # --- JSON -------------------------------------------------------------------------------

    async def api_post(self, request: web.Request) -> web.Response:
        post_id = request.match_info["post_id"]
        media = await self._post_media(post_id)
        if not media:
            return _json({"error": f"no media of post {post_id!r}"}, status=404)
        return _json({"post_id": post_id, "media": media})

    async def api_medium(self, request: web.Request) -> web.Response:
        media_id = request.match_info["media_id"]
        found = await self._row(media_id)
        if found is None:
            return _json({"error": f"no medium {media_id!r}"}, status=404)
        described = await self.describe(found)
        described["analysis"] = _analysis(found.get("ai_analysis"))
        return _json(described)

    # --- rows -------------------------------------------------------------------------------

    async def _row(self, media_id: str) -> dict[str, Any] | None:
        record = await self._pool.fetchrow(self._sql["show_row"], media_id)
        return dict(record) if record is not None else None

    async def _post_media(self, post_id: str) -> list[dict[str, Any]]:
        records = await self._pool.fetch(
            self._sql["dashboard_post_media"], post_id, POST_MEDIA_LIMIT
        )
        return [await self.describe(dict(r)) for r in records]

    async def describe(self, row: dict[str, Any]) -> dict[str, Any]:
        """One medium as the pages and the API show it: its best URL (`mediad url`'s choice),
        what to display for it, and its statuses."""
        best = await url.choose(
            row, presign=self._presigner(), expiry=self._config.archive.presign_expiry
        )
        followable = best.kind != "original" or platforms.redact_url(best.url) == best.url
        # An original known to be dead (its download failed, its signature expired) would only
        # show a broken picture.
        dead = best.kind == "original" and (
            row.get("download_status") == "failed"
            or (best.expires_at is not None and best.expires_at <= datetime.now(UTC))
        )
        is_picture = (row.get("mime_type") or "").startswith("image/") or (
            not row.get("mime_type") and row.get("media_type") in ("image", "gif")
        )
        display = best.url if followable and is_picture and not dead else None
        return {
            "media_id": row["media_id"],
            "post_id": row["post_id"],
            "platform": row.get("platform"),
            "media_type": row.get("media_type"),
            "mime_type": row.get("mime_type"),
            "width": row.get("width"),
            "height": row.get("height"),
            "file_size": row.get("file_size"),
            "sha256": row.get("sha256_sum"),
            "media_url": platforms.redact_url(row["media_url"] or ""),
            "best_url": best.url if followable else platforms.redact_url(best.url),
            "best_url_kind": best.kind,
            "best_url_reason": platforms.redact_urls(best.reason),
            "thumbnail_url": row.get("thumbnail_url"),
            "display_image_url": display,
            "has_local_image": best.kind == "hosted",
            "archive_url": row.get("archive_url"),
            "statuses": {d.name: row.get(d.status_column) for d in self._registry},
            "error_code": row.get("error_code"),
            "created_at": row.get("created_at"),
        }

    def _presigner(self) -> url.Presign | None:
        archive = self._config.archive
        if not (archive.enabled or archive.bucket):
            return None

        async def presign(bucket: str, key: str, seconds: float) -> str:
            client = await self._resources.s3()
            return await client.presign_get(key, bucket, seconds)

        return presign


def _failed_example(record: asyncpg.Record) -> dict[str, Any]:
    return {
        "media_id": record["media_id"],
        "post_id": record["post_id"],
        "media_url": platforms.redact_url(record["media_url"] or ""),
        "last_error": platforms.redact_urls(record["last_error"] or ""),
    }


def _html(page: str, status: int = 200) -> web.Response:
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={
            # No script runs on these pages, and images come only from http(s) URLs.
            "Content-Security-Policy": "default-src 'none'; img-src http: https: data:;"
            " style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        },
    )


def _json(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=_dumps)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
