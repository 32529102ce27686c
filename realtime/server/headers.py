"""Security headers on every HTTP answer that is not yet under way (pages, /static/ files, JSON, errors).

- `X-Content-Type-Options: nosniff`: a browser uses an answer only as what its Content-Type says (an uploaded or
  reflected text is never run as a script or shown as a page).
- `Referrer-Policy: no-referrer`: a page's URL (room names; a private viewer link's key is in the fragment, which
  is never sent anyway) does not leak to other sites. The pages need no referrer: the server checks Origin, which
  fetch() and WebSocket still send.
- On the HTML pages (`/`, `/speak`, `/static/*.html`) only:
  - `Content-Security-Policy`: scripts only from this server's own files (no inline script, no eval), connections
    only to itself (its ws:// and wss:// included, CSP level 3), nothing else loaded; a script injected into a page
    cannot run, nor send what it reads elsewhere. `<style>` and style attributes stay allowed.
  - `frame-ancestors 'none'` (and `X-Frame-Options: DENY` for browsers without CSP 2): no other site can put the
    lecturer's microphone page, or the viewer, in a frame and click on it for the user.
  The widget (`/static/widget.js`) is embedded by other sites' pages: it gets no CSP and no
  Cross-Origin-Resource-Policy, so their `<script src>` keeps working.
"""

from __future__ import annotations

from aiohttp import web

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; media-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
EVERY = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
PAGE = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"}
PAGES = frozenset({"/", "/speak"})


def is_page(request: web.Request, response: web.StreamResponse) -> bool:
    """By path, not Content-Type: a FileResponse sets its type only when it is prepared."""
    if request.path in PAGES or request.path.endswith((".html", ".htm")):
        return True
    return not isinstance(response, web.FileResponse) and response.content_type == "text/html"


def secure(request: web.Request, response: web.StreamResponse) -> None:
    if not response.prepared:  # a WebSocket or a streamed answer has sent its headers already
        response.headers.update(EVERY)
        if is_page(request, response):
            response.headers.update(PAGE)


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # 404, 405, 403 from the router and static files
        secure(request, exc)
        raise
    secure(request, response)
    return response
