"""ASGI guards for ``imgcls serve``: the Host header on loopback binds, and uploads that stall."""

from __future__ import annotations

import asyncio
import json

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


async def _json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HostGuard:
    """A server bound to loopback answers only requests addressed to loopback names, so a web page
    cannot reach it through a DNS name that resolves to 127.0.0.1 (DNS rebinding)."""

    def __init__(self, app, allowed: set[str] | None):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.allowed is not None:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed:
                return await _json(send, 400, f"Host {host!r} is not served here (loopback only)")
        return await self.app(scope, receive, send)


class UploadTimeout:
    """A request body that sends nothing for ``seconds``, or is not complete ``total`` seconds after the
    request started (one byte every few seconds never ends otherwise), is answered 408 and dropped, so
    stalled or trickling uploads never hold a connection (or a worker) for ever.

    The 408 is sent here, before the app sees the stall: the app is then told the client left, and
    whatever it answers is dropped (a form parser would otherwise turn the stall into a 400)."""

    def __init__(self, app, seconds: float, total: float | None = None):
        self.app, self.seconds = app, seconds
        self.total = total if total is not None else 4 * seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.total
        state = {"started": False, "answered": False}

        async def timed_receive():
            if state["answered"]:
                return {"type": "http.disconnect"}
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError
                return await asyncio.wait_for(receive(), min(self.seconds, left))
            except asyncio.TimeoutError:
                if not state["started"]:
                    why = (
                        f"the upload sent nothing for {self.seconds:g} s"
                        if left > self.seconds
                        else f"the upload was not complete after {self.total:g} s"
                    )
                    await _json(send, 408, why)
                    state["answered"] = True
                return {"type": "http.disconnect"}

        async def tracked_send(message):
            if state["answered"]:
                return  # the 408 went out already
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except Exception:
            if not state["answered"]:
                raise
