"""Real clients for ferricorn's ASGI tests: httpx for HTTP, websockets for WebSocket.

`python client.py PLAN` with PLAN a JSON object; prints one JSON object. HTTP plan: url, uds,
method, headers, json, body, body_size (a streamed upload of that many bytes). WebSocket plan
("ws": true): url, uds, subprotocols, send (messages; each waits for one reply), binary,
hold (seconds to wait for the server to close).
"""
import asyncio
import json
import sys

import httpx
import websockets
from websockets.asyncio.client import connect, unix_connect


async def http(plan):
    transport = httpx.AsyncHTTPTransport(uds=plan["uds"]) if plan.get("uds") else None
    async with httpx.AsyncClient(transport=transport, timeout=20) as c:
        kw = {}
        if "json" in plan:
            kw["json"] = plan["json"]
        if "body" in plan:
            kw["content"] = plan["body"].encode()
        if "body_size" in plan:
            size = plan["body_size"]

            async def gen():
                sent = 0
                while sent < size:
                    n = min(65536, size - sent)
                    sent += n
                    yield b"b" * n

            kw["content"] = gen()
        async with c.stream(plan.get("method", "GET"), plan["url"],
                            headers=plan.get("headers"), **kw) as r:
            parts = []
            async for chunk in r.aiter_bytes():
                parts.append(chunk)
            body = b"".join(parts)
            return {"status": r.status_code, "headers": dict(r.headers),
                    "body": body.decode("latin-1"), "pieces": len(parts),
                    "http_version": r.http_version}


async def ws(plan):
    kw = {"open_timeout": 10, "close_timeout": 10}
    if plan.get("subprotocols"):
        kw["subprotocols"] = plan["subprotocols"]
    if plan.get("uds"):
        opener = unix_connect(plan["uds"], plan["url"], **kw)
    else:
        opener = connect(plan["url"], **kw)
    out = {"received": []}
    try:
        async with opener as w:
            out["subprotocol"] = w.subprotocol
            out["headers"] = {k.lower(): v for k, v in w.response.headers.raw_items()}
            for m in plan.get("send", []):
                await w.send(m.encode() if plan.get("binary") else m)
                try:
                    r = await asyncio.wait_for(w.recv(), 10)
                except websockets.ConnectionClosed:
                    break
                out["received"].append(r if isinstance(r, str) else {"bytes": r.decode()})
            if plan.get("hold"):
                try:
                    await asyncio.wait_for(w.wait_closed(), plan["hold"])
                except asyncio.TimeoutError:
                    out["still_open"] = True
        out["close_code"] = w.close_code
        out["close_reason"] = w.close_reason
    except websockets.InvalidStatus as e:
        out["rejected"] = e.response.status_code
        out["body"] = (e.response.body or b"").decode("latin-1")
    return out


def main():
    plan = json.loads(sys.argv[1])
    result = asyncio.run(ws(plan) if plan.get("ws") else http(plan))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
