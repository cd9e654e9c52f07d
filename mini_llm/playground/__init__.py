"""GET /: the playground page, one self-contained file read once per app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from ..intake import Incoming

# Only this page's own inline script and style, and fetches to this gateway: nothing from
# elsewhere can load, and the page cannot be framed by another site.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def playground_handler() -> Callable[[Incoming], Awaitable[web.Response]]:
    """A handler serving the page, read from the package now (once, at app creation)."""
    page = resources.files(__name__).joinpath("index.html").read_bytes()

    async def playground(incoming: Incoming) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=HEADERS)

    return playground
