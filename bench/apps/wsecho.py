"""ASGI WebSocket echo: every message back as it came (text as text, bytes as bytes); a plain
HTTP request gets a short answer, so that servers can be checked for readiness the same way."""

BODY = b"websocket echo\n"


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            if m.get("text") is not None:
                await send({"type": "websocket.send", "text": m["text"]})
            else:
                await send({"type": "websocket.send", "bytes": m["bytes"]})
    elif scope["type"] == "http":
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"15")],
        })
        await send({"type": "http.response.body", "body": BODY})
