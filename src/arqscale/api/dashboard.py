"""The web dashboard: a static page at ``/`` and ``/dashboard`` that drives the JSON API from the browser.

The page is plain HTML, CSS and JavaScript under ``arqscale/api/static`` (no build step, nothing fetched
from elsewhere). It holds no secrets and reads nothing from Redis itself: every number and every
action goes through the ``/v1`` API with the user's bearer token, so the page loads without the token
and then asks for it.

It is served by a middleware rather than by routes, so the API's route table stays exactly the
documented ``OPERATIONS`` and the token check never sees these paths. ``arqscale.api.app`` puts the
middleware ahead of the token check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ASSETS = {
    "/": ("dashboard.html", "text/html"),
    "/dashboard": ("dashboard.html", "text/html"),
    "/dashboard.js": ("dashboard.js", "text/javascript"),
    "/dashboard.css": ("dashboard.css", "text/css"),
}
PATHS = frozenset(_ASSETS)

# The page only talks to its own origin, runs only its own script and cannot be framed: job
# arguments and errors are user data, and even if one slipped into the markup nothing would run.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _load() -> dict[str, tuple[bytes, str]]:
    static = files("arqscale.api") / "static"
    return {path: (static.joinpath(name).read_bytes(), content_type) for path, (name, content_type) in _ASSETS.items()}


_BODIES: dict[str, tuple[bytes, str]] = _load()


def asset(path: str) -> tuple[bytes, str] | None:
    """The body and content type served at ``path``, or None when the dashboard has nothing there."""
    return _BODIES.get(path)


@web.middleware
async def dashboard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    found = asset(request.path) if request.method in ("GET", "HEAD") else None
    if found is None:
        return await handler(request)
    body, content_type = found
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=SECURITY_HEADERS)
