"""The ASGI app of the end-to-end suite (tests/e2e/run.sh): a plain ASGI 3 app, no packages.

/        "asgi" (and the lifespan state: "asgi lifespan-ok")
/pid     the worker's pid
"""
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                scope["state"]["lifespan"] = "lifespan-ok"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/pid":
        body = str(os.getpid()).encode()
    else:
        body = f"asgi {scope.get('state', {}).get('lifespan', '-')}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
