"""Plain ASGI apps for ferricorn's ASGI tests: each behaviour under its own path.

HTTP:
  /scope            the scope as JSON (bytes as latin-1 text)
  /stream?n=N       N chunks of 1000 bytes, more_body=True each, then an empty last one
  /echo             the request body back, read with receive() chunk by chunk; the answer's
                    X-Chunks says how many http.request messages carried bytes
  /echo-cancel      the body back, after a first receive() cancelled by a timeout
  /wait-disconnect  awaits receive() until http.disconnect, then records it in $MARK_DIR
  /raise-early      raises before http.response.start
  /raise-late       raises after http.response.start and a first body chunk
  /no-response      returns without sending anything
  /slow-stream      64 KiB chunks until the client stops reading; records in $MARK_DIR how
                    many send() calls had returned when it was stopped
  /block?s=S        blocks the event loop (time.sleep) for S seconds
  /state            scope["state"] as JSON (what lifespan startup put there)
  /pid              the worker's pid
WebSocket:
  /ws               echo; accepts the first subprotocol offered that is "chat" or "echo";
                    a text "close:CODE" closes with that code and reason "bye"; a text "raise"
                    raises; "subprotocols" answers the scope's list
  /ws-deny          closes before accepting (403)
  /ws-deny-body     denial response 401 with a body (websocket.http.response)
  /ws-flood         accepts, then sends 64 KiB messages until send() fails; records in
                    $MARK_DIR how many were sent before the client stopped reading
  /ws-hold          accepts and waits for the disconnect; records its code in $MARK_DIR
Lifespan: $LIFESPAN = ok (default; state["greeting"] = "hello"), slow (ok after 1.5 s),
fail (startup.failed),
raise (raises at startup), none (raises on a lifespan scope, like Django).
"""

import asyncio
import json
import os
import time

MARK_DIR = os.environ.get("MARK_DIR", "/tmp")
LIFESPAN = os.environ.get("LIFESPAN", "ok")


def mark(name, value):
    path = os.path.join(MARK_DIR, name)
    with open(path + ".tmp", "w") as f:
        f.write(str(value))
    os.replace(path + ".tmp", path)


def jsonable(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


async def respond(send, status, body, headers=()):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/octet-stream"), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send):
    if LIFESPAN == "none":
        raise ValueError("this app does not speak lifespan")
    while True:
        m = await receive()
        if m["type"] == "lifespan.startup":
            if LIFESPAN == "fail":
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            if LIFESPAN == "raise":
                raise RuntimeError("startup exploded")
            if LIFESPAN == "slow":
                await asyncio.sleep(1.5)
            scope["state"]["greeting"] = "hello"
            await send({"type": "lifespan.startup.complete"})
        elif m["type"] == "lifespan.shutdown":
            mark("lifespan-shutdown", os.getpid())
            await send({"type": "lifespan.shutdown.complete"})
            return


async def http(scope, receive, send):
    path = scope["path"]
    query = dict(
        p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p
    )
    if path.endswith("/scope"):
        s = {k: v for k, v in scope.items() if k not in ("state", "extensions")}
        await respond(send, 200, json.dumps(jsonable(s)).encode())
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(int(query.get("n", "3"))):
            await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/echo":
        chunks, body = 0, []
        while True:
            m = await receive()
            assert m["type"] == "http.request", m
            if m["body"]:
                chunks += 1
                body.append(m["body"])
            if not m.get("more_body"):
                break
        await respond(send, 200, b"".join(body), [(b"x-chunks", str(chunks).encode())])
    elif path == "/echo-cancel":
        # A receive() cancelled while it waits (as a timeout, or anyio's is_disconnected(),
        # does) must not lose the chunk it was waiting for.
        try:
            first = await asyncio.wait_for(receive(), 0.05)
            cancelled = b"no"
        except asyncio.TimeoutError:
            first, cancelled = None, b"yes"
        body = [first["body"]] if first else []
        more = first.get("more_body", False) if first else True
        while more:
            m = await receive()
            body.append(m.get("body", b""))
            more = m.get("more_body", False)
        await respond(send, 200, b"".join(body), [(b"x-cancelled", cancelled)])
    elif path == "/wait-disconnect":
        while True:
            m = await receive()
            if m["type"] == "http.disconnect":
                mark("disconnect", "seen")
                return
    elif path == "/raise-early":
        raise RuntimeError("early failure")
    elif path == "/raise-late":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("late failure")
    elif path == "/no-response":
        return
    elif path == "/slow-stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        sent = 0
        try:
            while sent < 100000:
                mark("slow-stream", sent)
                await send({"type": "http.response.body", "body": b"y" * 65536, "more_body": True})
                sent += 1
        finally:
            mark("slow-stream", sent)
    elif path == "/block":
        time.sleep(float(query.get("s", "1")))
        await respond(send, 200, b"woke up")
    elif path == "/state":
        await respond(send, 200, json.dumps(scope.get("state")).encode())
    elif path == "/pid":
        await respond(send, 200, str(os.getpid()).encode())
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", "0.5")))
        await respond(send, 200, b"slept")
    else:
        await respond(send, 404, b"not found")


async def websocket(scope, receive, send):
    path = scope["path"]
    m = await receive()
    assert m["type"] == "websocket.connect", m
    if path == "/ws-deny":
        await send({"type": "websocket.close"})
        return
    if path == "/ws-deny-body":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"who are you?"})
        return
    chosen = next((p for p in scope["subprotocols"] if p in ("chat", "echo")), None)
    await send({"type": "websocket.accept", "subprotocol": chosen,
                "headers": [(b"x-ferricorn-test", b"yes")]})
    if path == "/ws-flood":
        sent = 0
        try:
            while sent < 100000:
                await send({"type": "websocket.send", "bytes": b"z" * 65536})
                sent += 1
                mark("ws-flood", sent)
        except OSError:
            pass
        return
    if path == "/ws-hold":
        m = await receive()
        mark("ws-hold", m.get("code"))
        return
    while True:
        m = await receive()
        if m["type"] == "websocket.disconnect":
            mark("ws-disconnect", m["code"])
            return
        text = m.get("text")
        if text == "raise":
            raise RuntimeError("the app failed mid-conversation")
        if text is not None and text.startswith("close:"):
            await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
            return
        if text == "subprotocols":
            await send({"type": "websocket.send", "text": json.dumps(scope["subprotocols"])})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": m["bytes"]})


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(scope, receive, send)
    elif kind == "http":
        await http(scope, receive, send)
    elif kind == "websocket":
        await websocket(scope, receive, send)
