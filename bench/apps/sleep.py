"""I/O-bound: sleeps 10 ms per request (the GIL is released while sleeping)."""

import time

BODY = b"slept 10 ms\n"


def app(environ, start_response):
    time.sleep(0.010)
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]
