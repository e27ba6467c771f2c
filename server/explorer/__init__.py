"""The metrics-tree explorer at `/`: one HTML page, one script and one stylesheet, served from package data.

The page is plain HTML + hand-written JavaScript (no framework, no build step, nothing from a CDN); it reads
everything from the REST API (`/api/v1/meta`, `/query`, `/tree`, `/tree/series`, `/drill`, `/whatif`).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
}
# everything the page loads comes from this server; no inline script or style
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
          "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def _load() -> dict[str, tuple[bytes, str]]:
    static = files(__package__) / "static"
    out = {}
    for name in ASSETS:
        data = (static / name).read_bytes()
        out[name] = (data, '"' + hashlib.sha256(data).hexdigest()[:20] + '"')
    return out


def router() -> APIRouter:
    assets = _load()
    api = APIRouter(include_in_schema=False)

    def serve(name: str, request: Request) -> Response:
        data, etag = assets[name]
        headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if name == "index.html":
            headers["Content-Security-Policy"] = POLICY
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=ASSETS[name], headers=headers)

    @api.get("/", summary="The metrics-tree explorer")
    def index(request: Request) -> Response:
        return serve("index.html", request)

    @api.get("/explorer/{name}")
    def asset(name: str, request: Request) -> Response:
        if name not in ASSETS or name == "index.html":
            return Response(b"not found", status_code=404, media_type="text/plain")
        return serve(name, request)

    return api
