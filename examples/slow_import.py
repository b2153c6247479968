"""A WSGI app whose *import* is deliberately slow.

Used by tests that exercise worker boot timeouts / readiness reporting.
The delay (in seconds, float) comes from FERRICORN_TEST_IMPORT_DELAY and
defaults to 2.0.
"""

import os
import time

IMPORT_DELAY = float(os.environ.get("FERRICORN_TEST_IMPORT_DELAY", "2.0"))

# Block at import time, before `app` exists.
time.sleep(IMPORT_DELAY)

BODY = b"Hello, World!"


def app(environ, start_response):
    """Same response as hello.app: 13 bytes of text/plain."""
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(BODY))),
        ],
    )
    return [BODY]


application = app
