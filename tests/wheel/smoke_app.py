"""The app the wheel smoke matrix serves (tests/wheel/smoke.py), behind wsgiref.validate."""
import hashlib
import json
import os
import sys
from wsgiref.validate import validator


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sys":
        body = json.dumps(
            {
                "version": sys.version,
                "prefix": sys.prefix,
                "executable": sys.executable,
                "pid": os.getpid(),
                "mark": os.environ.get("FERRICORN_SMOKE_MARK", ""),
            }
        ).encode()
    elif path == "/post":
        data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        body = json.dumps(
            {"len": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        ).encode()
    else:
        body = b"ok"
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


app = validator(_app)
