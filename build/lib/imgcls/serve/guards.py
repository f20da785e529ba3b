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


class _Stalled(Exception):
    pass


class UploadTimeout:
    """A request body that sends nothing for ``seconds`` is answered 408 and dropped, so stalled uploads
    never hold a connection (or a worker) for ever."""

    def __init__(self, app, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def timed_receive():
            try:
                return await asyncio.wait_for(receive(), self.seconds)
            except asyncio.TimeoutError:
                raise _Stalled from None

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, tracked_send)
        except _Stalled:
            if not started:
                await _json(send, 408, f"the upload sent nothing for {self.seconds:g} s")
