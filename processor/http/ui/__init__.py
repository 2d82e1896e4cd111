"""The operator console at `/ui`: server-rendered pages over the `/v1` API.

Every page reads the same `/v1` routes users call (in-process, through the ASGI app,
with the signed-in key as the bearer token), so the console has no data of its own and
sees exactly what the key's workspace may see. The key lives in an HttpOnly,
SameSite=Strict cookie scoped to `/ui`; it is never put in a URL or logged.

Vendored static files (no CDN at run time): htmx 2.0.11 (partial updates and polling)
and uPlot 1.6.32 (the fires chart), both MIT, in `static/` with their licences.
"""

from processor.http.ui.pages import router

__all__ = ["router"]
