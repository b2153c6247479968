"""Hello world: a fixed 13-byte body with Content-Length set."""

BODY = b"Hello, World!"


def app(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]
