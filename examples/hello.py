"""Minimal WSGI application used as ferricorn's "hello world" example.

Run with e.g. ``ferricorn hello:app`` (``hello:application`` also works).
"""

BODY = b"Hello, World!"


def app(environ, start_response):
    """Respond to every request with a fixed 13-byte plain-text body."""
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(BODY))),
        ],
    )
    # PEP 3333: the response body is an iterable of bytestrings.
    return [BODY]


# Conventional name looked up by many WSGI servers.
application = app
