"""A Starlette app for ferricorn's ASGI tests: routes, lifespan state, a WebSocket echo."""

import contextlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute


@contextlib.asynccontextmanager
async def lifespan(app):
    yield {"db": "connected"}


async def homepage(request):
    return JSONResponse({"hello": "starlette", "db": request.state.db,
                         "path": request.url.path, "root_path": request.scope["root_path"]})


async def echo(request):
    body = await request.body()
    return PlainTextResponse(body.decode(), headers={"x-len": str(len(body))})


async def ws(websocket):
    await websocket.accept()
    async for msg in websocket.iter_text():
        await websocket.send_text(msg.upper())


app = Starlette(
    routes=[Route("/", homepage), Route("/echo", echo, methods=["POST"]),
            WebSocketRoute("/ws", ws)],
    lifespan=lifespan,
)
