"""ASGI hello world: a fixed 13-byte body with Content-Length set (the `hello` app, in ASGI)."""

BODY = b"Hello, World!"
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
RESPONSE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return  # no lifespan
    await send(START)
    await send(RESPONSE)
