"""An ASGI app that imports nothing at module level, like bench/apps/ahello.py: nothing but the
server's own imports runs on the worker's main thread before the event loop starts on a thread
of its own. `GET /` answers whether the thread the app runs on is `threading.main_thread()`
("main" or "not-main"; the loop's thread is not the main one)."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    import threading  # at request time, on the event loop's thread

    main = threading.current_thread() is threading.main_thread()
    body = b"main" if main else b"not-main"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
