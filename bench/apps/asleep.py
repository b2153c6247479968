"""ASGI, I/O-bound: awaits asyncio.sleep(0.010) per request (the `sleep` app, in ASGI)."""

import asyncio

BODY = b"slept 10 ms\n"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"12")],
}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await asyncio.sleep(0.010)
    await send(START)
    await send({"type": "http.response.body", "body": BODY})
