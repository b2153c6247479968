"""A FastAPI app for ferricorn's ASGI tests: path and query parameters, a pydantic body, a
streamed response, a streamed upload, lifespan state and a WebSocket echo."""

from contextlib import asynccontextmanager
from typing import Optional

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app):
    yield {"started": "yes"}


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request, q: Optional[str] = None):
    return {
        "item_id": item_id,
        "q": q,
        "started": request.state.started,
        "scheme": request.url.scheme,
        "client": request.client.host if request.client else None,
        "root_path": request.scope.get("root_path"),
        "url": str(request.url),
    }


@app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "double": item.price * 2}


@app.get("/stream")
async def stream():
    async def gen():
        for i in range(5):
            yield f"part {i}\n".encode()

    return StreamingResponse(gen(), media_type="text/plain")


@app.post("/upload")
async def upload(request: Request):
    n = 0
    parts = 0
    async for chunk in request.stream():
        n += len(chunk)
        parts += 1 if chunk else 0
    return {"bytes": n, "parts": parts}


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"fastapi: {text}")
    except WebSocketDisconnect:
        pass
