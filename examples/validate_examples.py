#!/usr/bin/env python3
"""Check the example apps against wsgiref.validate, in-process.

Each app is wrapped in ``wsgiref.validate.validator`` and driven with a
``wsgiref.util.setup_testing_defaults`` environ by a tiny PEP 3333 "server"
(start_response with exc_info handling, write(), full iteration, close()).
Validator assertions and WSGIWarnings both count as failures.

Usage:  cd examples && python3 validate_examples.py
Prints one line per route checked; exits 1 if anything failed.
"""

import io
import json
import os
import sys
import tempfile
import traceback
import warnings
from wsgiref.util import FileWrapper, setup_testing_defaults
from wsgiref.validate import WSGIWarning, validator

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Don't make slow_import actually slow here; must be set before importing it.
os.environ["FERRICORN_TEST_IMPORT_DELAY"] = "0"

import factory  # noqa: E402
import hello  # noqa: E402
import slow_import  # noqa: E402
import spec  # noqa: E402

# Spec warnings from the validator are errors too.
warnings.simplefilter("error", WSGIWarning)


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


class Response:
    def __init__(self, status, headers, body, errors):
        self.status = status
        self.headers = headers
        self.body = body
        self.errors = errors  # text written to wsgi.errors

    def header(self, name):
        """All values of header `name` (case-insensitive)."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        expect(self.header("Content-Type") == ["application/json"],
               "expected application/json, got %r" % self.header("Content-Type"))
        return json.loads(self.body)


def call(app, path, query="", method="GET", body=None, content_type=None,
         file_wrapper=True, extra_environ=None):
    """Run one request through validator(app) and return the Response."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
    }
    if body is not None:
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
    if content_type is not None:
        environ["CONTENT_TYPE"] = content_type
    if file_wrapper:
        environ["wsgi.file_wrapper"] = FileWrapper
    environ.update(extra_environ or {})
    setup_testing_defaults(environ)
    errors = environ["wsgi.errors"]  # validator replaces it with a wrapper

    state = {"status": None, "headers": None, "sent": False}
    chunks = []

    def write(data):
        expect(state["status"] is not None, "write() before start_response")
        if data:
            state["sent"] = True
        chunks.append(data)

    def start_response(status, headers, exc_info=None):
        if exc_info is not None:
            try:
                if state["sent"]:  # too late to change headers: re-raise
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # avoid a reference cycle
        elif state["status"] is not None:
            raise CheckFailed("start_response called twice without exc_info")
        state["status"], state["headers"] = status, headers
        return write

    result = validator(app)(environ, start_response)
    try:
        for chunk in result:
            if chunk:
                expect(state["status"] is not None,
                       "body data before start_response")
                state["sent"] = True
            chunks.append(chunk)
    finally:
        if hasattr(result, "close"):
            result.close()

    expect(state["status"] is not None, "start_response was never called")
    resp = Response(state["status"], state["headers"], b"".join(chunks),
                    errors.getvalue())
    for value in resp.header("Content-Length"):
        expect(int(value) == len(resp.body),
               "Content-Length %s but body has %d bytes"
               % (value, len(resp.body)))
    return resp


def ok(resp, body=None, status="200 OK", content_type=None):
    """Common assertions on status / body / Content-Type."""
    expect(resp.status == status,
           "status %r, expected %r" % (resp.status, status))
    if body is not None:
        expect(resp.body == body, "body %r, expected %r" % (resp.body[:200], body[:200]))
    if content_type is not None:
        expect(resp.header("Content-Type") == [content_type],
               "Content-Type %r, expected %r"
               % (resp.header("Content-Type"), content_type))


# --------------------------------------------------------------------------
# checks: (label, function) pairs; each function raises on failure
# --------------------------------------------------------------------------

CHECKS = []


def check(label):
    def register(fn):
        CHECKS.append((label, fn))
        return fn
    return register


@check("hello GET /")
def _():
    resp = call(hello.app, "/")
    ok(resp, b"Hello, World!", content_type="text/plain")
    expect(resp.header("Content-Length") == ["13"], "Content-Length != 13")
    expect(hello.application is hello.app, "hello.application missing")


@check("slow_import GET /")
def _():
    ok(call(slow_import.app, "/"), b"Hello, World!")


@check("factory create_app() GET /")
def _():
    ok(call(factory.create_app(), "/"), b"factory")


@check('factory create_app("hi") GET /')
def _():
    ok(call(factory.create_app("hi"), "/"), b"hi")


@check("broken_syntax.py raises SyntaxError")
def _():
    with open(os.path.join(HERE, "broken_syntax.py")) as f:
        source = f.read()
    try:
        compile(source, "broken_syntax.py", "exec")
    except SyntaxError:
        return
    raise CheckFailed("broken_syntax.py compiled without error")


@check("spec GET /")
def _():
    ok(call(spec.app, "/"), b"spec app\n", content_type="text/plain")


@check("spec GET /environ")
def _():
    data = call(spec.app, "/environ", query="a=1").json()
    expect(data["wsgi.version"] == [1, 0], "wsgi.version %r" % data["wsgi.version"])
    expect(data["wsgi.input"] == "InputWrapper", "wsgi.input %r" % data["wsgi.input"])
    expect(data["QUERY_STRING"] == "a=1", "QUERY_STRING %r" % data["QUERY_STRING"])
    expect(data["_pid"] == os.getpid(), "_pid mismatch")
    expect(data["_os_environ"].get("FERRICORN_TEST_IMPORT_DELAY") == "0",
           "_os_environ missing FERRICORN_TEST_ vars")
    expect(data["_sys"]["path"] == sys.path, "_sys.path mismatch")
    expect(isinstance(data["_libpython"], list), "_libpython not a list")


@check("spec POST /echo (with CONTENT_TYPE)")
def _():
    payload = b"hello\x00\xffworld\n" * 100
    ok(call(spec.app, "/echo", method="POST", body=payload,
            content_type="text/x-test"), payload, content_type="text/x-test")


@check("spec POST /echo (no CONTENT_TYPE, empty body)")
def _():
    ok(call(spec.app, "/echo", method="POST", body=b""), b"",
       content_type="application/octet-stream")


@check("spec POST /echo-lines")
def _():
    resp = call(spec.app, "/echo-lines", method="POST", body=b"a\nb\r\n\xe9c")
    ok(resp)
    expect(resp.json() == ["a\n", "b\r\n", "\xe9c"], "lines %r" % resp.body)


@check("spec POST /echo-iter")
def _():
    resp = call(spec.app, "/echo-iter", method="POST", body=b"a\nb\r\n\xe9c")
    ok(resp)
    expect(resp.json() == ["a\n", "b\r\n", "\xe9c"], "lines %r" % resp.body)


@check("spec POST /echo-read-chunks?size=3")
def _():
    resp = call(spec.app, "/echo-read-chunks", query="size=3", method="POST",
                body=b"abcdefgh")
    ok(resp)
    expect(resp.json() == {"sizes": [3, 3, 2], "total": 8}, "got %r" % resp.body)


@check("spec GET /stream?n=3&size=4 (+ /closed counter)")
def _():
    before = call(spec.app, "/closed").json()["closed"]
    resp = call(spec.app, "/stream", query="n=3&size=4&delay=0.01")
    ok(resp, b"0:..1:..2:..", content_type="text/plain")
    expect(not resp.header("Content-Length"), "/stream sent Content-Length")
    after = call(spec.app, "/closed").json()["closed"]
    expect(after == before + 1, "close() count %d -> %d" % (before, after))


@check("spec GET /stream (defaults)")
def _():
    ok(call(spec.app, "/stream"),
       b"".join((b"%d:" % i).ljust(10, b".") for i in range(5)))


@check("spec GET /stream?n=0")
def _():
    ok(call(spec.app, "/stream", query="n=0"), b"")


@check("spec GET /closed")
def _():
    data = call(spec.app, "/closed").json()
    expect(isinstance(data["closed"], int), "closed not an int")


@check("spec GET /write")
def _():
    ok(call(spec.app, "/write"), b"first;second;third")


FILE_BODY = bytes(i % 251 for i in range(20000))


@check("spec GET /file?size=20000")
def _():
    ok(call(spec.app, "/file", query="size=20000"), FILE_BODY,
       content_type="application/octet-stream")


@check("spec GET /file?size=20000 (no wsgi.file_wrapper)")
def _():
    ok(call(spec.app, "/file", query="size=20000", file_wrapper=False),
       FILE_BODY)


@check("spec GET /file-like?size=20000")
def _():
    ok(call(spec.app, "/file-like", query="size=20000"), FILE_BODY)


@check("spec GET /exc-info")
def _():
    ok(call(spec.app, "/exc-info"), b"handled",
       status="500 Internal Server Error")


@check("spec GET /status?code=418")
def _():
    ok(call(spec.app, "/status", query="code=418"), b"status 418",
       status="418 Custom Reason")


@check("spec GET /status?code=204")
def _():
    resp = call(spec.app, "/status", query="code=204")
    ok(resp, b"", status="204 Custom Reason")
    expect(not resp.header("Content-Type"), "Content-Type on a 204")


@check("spec GET /status?code=304")
def _():
    ok(call(spec.app, "/status", query="code=304"), b"",
       status="304 Custom Reason")


@check("spec GET /status?code=abc (400)")
def _():
    ok(call(spec.app, "/status", query="code=abc"), status="400 Bad Request")


@check("spec GET /headers")
def _():
    resp = call(spec.app, "/headers")
    ok(resp)
    expect(resp.header("Set-Cookie") == ["a=1", "b=2"], "Set-Cookie %r"
           % resp.header("Set-Cookie"))
    expect(resp.header("X-Custom") == ["yes"], "X-Custom missing")


@check("spec GET /sleep?s=0.01")
def _():
    ok(call(spec.app, "/sleep", query="s=0.01"), b"slept")


@check("spec GET /mark (files created before and after)")
def _():
    with tempfile.TemporaryDirectory() as d:
        started, done = os.path.join(d, "started"), os.path.join(d, "done")
        ok(call(spec.app, "/mark", query="started=%s&done=%s&s=0.01" % (started, done)),
           b"marked")
        expect(os.path.exists(started) and os.path.exists(done), "marker files missing")


@check("spec GET /pid")
def _():
    ok(call(spec.app, "/pid"), str(os.getpid()).encode())


@check("spec GET /scheme (http)")
def _():
    ok(call(spec.app, "/scheme"), b"http")


@check("spec GET /scheme (https)")
def _():
    ok(call(spec.app, "/scheme", extra_environ={"HTTPS": "on"}), b"https")


@check("spec GET /errors")
def _():
    resp = call(spec.app, "/errors")
    ok(resp, b"ok")
    expect(resp.errors == "message to wsgi.errors\n",
           "wsgi.errors got %r" % resp.errors)


@check("spec GET /no-such-route (404)")
def _():
    ok(call(spec.app, "/no-such-route"), b"not found\n", status="404 Not Found")


def main():
    failures = 0
    for label, fn in CHECKS:
        try:
            fn()
        except CheckFailed as exc:
            failures += 1
            print("FAIL  %s: %s" % (label, exc))
        except (AssertionError, WSGIWarning) as exc:
            # Raised by wsgiref.validate: the app broke the WSGI spec.
            failures += 1
            print("FAIL  %s: wsgiref.validate: %s: %s"
                  % (label, type(exc).__name__, exc))
            traceback.print_exc()
        except Exception:
            failures += 1
            print("FAIL  %s: unexpected exception" % label)
            traceback.print_exc()
        else:
            print("ok    %s" % label)
    if failures:
        print("\n%d of %d checks FAILED" % (failures, len(CHECKS)))
        return 1
    print("\nall %d checks passed" % len(CHECKS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
