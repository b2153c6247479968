"""WSGI (PEP 3333) conformance app for exercising ferricorn.

A single application, ``app``, dispatches on PATH_INFO. Each route targets one
part of the spec (input stream methods, streaming bodies, lazy start_response,
close(), the legacy write() callable, wsgi.file_wrapper, exc_info, ...).
The integration test-suite depends on the exact routes below.

Every route passes ``wsgiref.validate.validator`` (see validate_examples.py)
except the deliberately broken ones: /raise, /raise-after-start, /hop-by-hop
and /spin.
"""

import atexit
import io
import json
import os
import threading
import sys
import tempfile
import time
from urllib.parse import parse_qs

# Number of times a /stream response iterable had close() called on it
# (per worker process). Reported by /closed.
CLOSED = 0

# size -> path of a temp file holding `_file_content(size)`; see /file.
_TEMP_FILES = {}
_TEMP_FILE_OWNERS = {}  # path -> pid of the process that created it

# Prefixes of os.environ keys reported by /environ.
_OS_ENVIRON_PREFIXES = ("LISTEN_", "NOTIFY_", "FERRICORN_TEST_", "VIRTUAL_ENV")

BLOCK_SIZE = 8192


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

class BadRequest(Exception):
    """Raised for malformed query parameters; turned into a 400 response."""


def _query(environ, name, conv, default):
    """Return query parameter `name` converted with `conv`, or `default`."""
    values = parse_qs(environ.get("QUERY_STRING", "")).get(name)
    if not values:
        return default
    try:
        return conv(values[0])
    except ValueError:
        raise BadRequest("bad value for %r: %r" % (name, values[0]))


def _respond(start_response, body, content_type="text/plain",
             status="200 OK", extra_headers=()):
    """Send a complete (Content-Length framed) response."""
    headers = [("Content-Type", content_type),
               ("Content-Length", str(len(body)))]
    headers.extend(extra_headers)
    start_response(status, headers)
    return [body]


def _json(start_response, obj):
    body = json.dumps(obj).encode("utf-8")
    return _respond(start_response, body, "application/json")


def _jsonable(value):
    """Map an environ value to something JSON-serialisable (see /environ)."""
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return type(value).__name__


def _libpython_maps():
    """Sorted unique paths of mapped files containing "libpython"."""
    paths = set()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)  # path may contain spaces
                if len(fields) == 6 and "libpython" in fields[5]:
                    paths.add(fields[5].strip())
    except OSError:  # no procfs (e.g. macOS)
        pass
    return sorted(paths)


def _content_length(environ):
    """CONTENT_LENGTH as an int, or None when absent/empty."""
    value = environ.get("CONTENT_LENGTH", "")
    return int(value) if value else None


def _file_content(size):
    return bytes(i % 251 for i in range(size))


def _temp_file_path(size):
    """Create (once per process and size) a temp file of `size` bytes."""
    path = _TEMP_FILES.get(size)
    if path is None or not os.path.exists(path):
        fd, path = tempfile.mkstemp(prefix="ferricorn-spec-%d-" % size)
        with os.fdopen(fd, "wb") as f:
            f.write(_file_content(size))
        _TEMP_FILES[size] = path
        _TEMP_FILE_OWNERS[path] = os.getpid()
    return path


@atexit.register
def _remove_temp_files():
    # Only unlink files this process created: a forked worker may have
    # inherited entries made by its parent, which still uses them.
    for path, pid in list(_TEMP_FILE_OWNERS.items()):
        if pid == os.getpid():
            try:
                os.unlink(path)
            except OSError:
                pass


class _BlockIter:
    """Fallback for servers without wsgi.file_wrapper: read in blocks."""

    def __init__(self, filelike, block_size):
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self):
        while True:
            block = self.filelike.read(self.block_size)
            if not block:
                return
            yield block

    def close(self):
        self.filelike.close()


def _serve_filelike(environ, start_response, filelike, size):
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(filelike, BLOCK_SIZE)
    return _BlockIter(filelike, BLOCK_SIZE)


class _StreamBody:
    """Response iterable for /stream that counts close() calls.

    start_response is called lazily, inside the generator, just before the
    first chunk is produced (allowed by PEP 3333).
    """

    def __init__(self, start_response, n, size, delay):
        self._gen = self._generate(start_response, n, size, delay)

    @staticmethod
    def _generate(start_response, n, size, delay):
        # No Content-Length: the server has to use chunked encoding (or
        # close-delimited framing for HTTP/1.0).
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(n):
            if i and delay:
                time.sleep(delay)
            yield (b"%d:" % i).ljust(size, b".")[:size]
        if n == 0:
            yield b""  # so start_response still runs before iteration ends

    def __iter__(self):
        return self._gen

    def close(self):
        global CLOSED
        CLOSED += 1
        self._gen.close()


# --------------------------------------------------------------------------
# routes: each takes (environ, start_response) and returns the body iterable
# --------------------------------------------------------------------------

def route_index(environ, start_response):
    return _respond(start_response, b"spec app\n")


def route_environ(environ, start_response):
    data = {key: _jsonable(value) for key, value in environ.items()}
    data["_pid"] = os.getpid()
    data["_os_environ"] = {k: v for k, v in os.environ.items()
                           if k.startswith(_OS_ENVIRON_PREFIXES)}
    data["_sys"] = {
        "version": sys.version,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "executable": sys.executable,
        "path": sys.path,
    }
    data["_libpython"] = _libpython_maps()
    return _json(start_response, data)


def route_echo(environ, start_response):
    stream = environ["wsgi.input"]
    length = _content_length(environ)
    if length is None:
        # No CONTENT_LENGTH (e.g. a chunked request body): PEP 3333 says
        # read() without an argument returns the remainder of the input.
        body = stream.read()
    else:
        # PEP 3333: don't read more than CONTENT_LENGTH. (wsgiref.validate
        # also insists read() gets exactly one argument.)
        body = stream.read(length)
    content_type = environ.get("CONTENT_TYPE") or "application/octet-stream"
    return _respond(start_response, body, content_type)


def route_echo_lines(environ, start_response):
    # readline() until the server signals EOF with b"".
    stream = environ["wsgi.input"]
    lines = []
    while True:
        line = stream.readline()
        if not line:
            break
        lines.append(line.decode("latin-1"))
    return _json(start_response, lines)


def route_echo_iter(environ, start_response):
    # wsgi.input must be iterable, yielding lines.
    lines = [line.decode("latin-1") for line in environ["wsgi.input"]]
    return _json(start_response, lines)


def route_echo_read_chunks(environ, start_response):
    size = _query(environ, "size", int, 1024)
    if size <= 0:
        raise BadRequest("size must be positive")
    stream = environ["wsgi.input"]
    sizes = []
    while True:
        chunk = stream.read(size)
        if not chunk:
            break
        sizes.append(len(chunk))
    return _json(start_response, {"sizes": sizes, "total": sum(sizes)})


def route_stream(environ, start_response):
    n = _query(environ, "n", int, 5)
    size = _query(environ, "size", int, 10)
    delay = _query(environ, "delay", float, 0.0)
    if n < 0 or size < 0 or delay < 0:
        raise BadRequest("n, size and delay must be >= 0")
    return _StreamBody(start_response, n, size, delay)


def route_closed(environ, start_response):
    return _json(start_response, {"closed": CLOSED})


def route_write(environ, start_response):
    # Legacy imperative API: write() sends data before the iterable.
    # No Content-Length, so the server must frame the body itself.
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"first;")
    write(b"second;")
    return [b"third"]


def route_file(environ, start_response):
    size = _query(environ, "size", int, 100000)
    if size < 0:
        raise BadRequest("size must be >= 0")
    f = open(_temp_file_path(size), "rb")
    return _serve_filelike(environ, start_response, f, size)


def route_file_like(environ, start_response):
    # Same content as /file, but not a real file (no fileno()), so the
    # server cannot use sendfile() and must iterate the wrapper.
    size = _query(environ, "size", int, 100000)
    if size < 0:
        raise BadRequest("size must be >= 0")
    buf = io.BytesIO(_file_content(size))
    return _serve_filelike(environ, start_response, buf, size)


def route_raise(environ, start_response):
    # Deliberately broken: exception before start_response.
    raise RuntimeError("boom from /raise")


def route_raise_after_start(environ, start_response):
    # Deliberately broken: exception from the iterable after output began.
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        yield b"partial"
        raise RuntimeError("boom from /raise-after-start")

    return body()


def route_exc_info(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("handled error")
    except ValueError:
        # Nothing has been sent yet, so replacing the status and headers
        # by passing exc_info is legal (PEP 3333, "Error Handling").
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain")], sys.exc_info())
    return [b"handled"]


def route_status(environ, start_response):
    code = _query(environ, "code", int, 200)
    if not 100 <= code <= 999:
        raise BadRequest("code must have three digits")
    status = "%d Custom Reason" % code
    if code in (204, 304):
        # No body and (per wsgiref.validate) no Content-Type allowed.
        start_response(status, [])
        return []
    return _respond(start_response, b"status %d" % code, status=status)


def route_headers(environ, start_response):
    # Repeated header names must be sent as separate header lines.
    return _respond(start_response, b"headers\n", extra_headers=[
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("X-Custom", "yes"),
    ])


def route_hop_by_hop(environ, start_response):
    # Deliberately broken: apps must not set hop-by-hop headers (PEP 3333);
    # the server drops the header (honouring its "close"), as Gunicorn does.
    return _respond(start_response, b"should not be sent\n",
                    extra_headers=[("Connection", "close")])


def route_sleep(environ, start_response):
    time.sleep(_query(environ, "s", float, 1.0))
    return _respond(start_response, b"slept")


def route_mark(environ, start_response):
    """Creates the file `started` (if given), sleeps `s` seconds, then creates `done` (if
    given): shows a test, from outside, in what order the worker ran its requests."""
    started = _query(environ, "started", str, None)
    done = _query(environ, "done", str, None)
    if started:
        open(started, "w").close()
    time.sleep(_query(environ, "s", float, 0.0))
    if done:
        open(done, "w").close()
    return _respond(start_response, b"marked")


def route_spin(environ, start_response):
    # Deliberately stuck worker (busy loop), for timeout tests.
    while True:
        pass


def route_pid(environ, start_response):
    return _respond(start_response, str(os.getpid()).encode())


_THREAD_LOCAL = threading.local()


def route_thread_local(environ, start_response):
    """Counts requests per Python thread in threading.local: the count must keep growing
    (a server that recreated thread states per request would reset it)."""
    _THREAD_LOCAL.count = getattr(_THREAD_LOCAL, "count", 0) + 1
    body = json.dumps({"thread": threading.get_ident(), "count": _THREAD_LOCAL.count})
    return _respond(start_response, body.encode(), "application/json")


def route_scheme(environ, start_response):
    return _respond(start_response, environ["wsgi.url_scheme"].encode())


def route_latin1(environ, start_response):
    # PEP 3333 "bytes as str": each byte of the request is one code point. Compared here in
    # Python, so a str built with the wrong internal form (ASCII flag, kind) would show up as
    # unequal or unhashable-alike, which a JSON dump alone would not reveal.
    header = environ.get("HTTP_X_LATIN")
    plain = environ.get("HTTP_X_PLAIN")
    data = {
        "header_eq": header == "caf\xe9",
        "header_key": {"caf\xe9": True}.get(header, False),
        "plain_eq": plain == "plain",
        "plain_key": {"plain": True}.get(plain, False),
        "plain_isascii": plain is not None and plain.isascii(),
        "input_empty": environ["wsgi.input"].read() == b"",
    }
    return _json(start_response, data)


def route_errors(environ, start_response):
    errors = environ["wsgi.errors"]
    errors.write("message to wsgi.errors\n")
    errors.flush()
    return _respond(start_response, b"ok")


ROUTES = {
    "/": route_index,
    "/environ": route_environ,
    "/echo": route_echo,
    "/echo-lines": route_echo_lines,
    "/echo-iter": route_echo_iter,
    "/echo-read-chunks": route_echo_read_chunks,
    "/stream": route_stream,
    "/closed": route_closed,
    "/write": route_write,
    "/file": route_file,
    "/file-like": route_file_like,
    "/raise": route_raise,
    "/raise-after-start": route_raise_after_start,
    "/exc-info": route_exc_info,
    "/status": route_status,
    "/headers": route_headers,
    "/hop-by-hop": route_hop_by_hop,
    "/sleep": route_sleep,
    "/mark": route_mark,
    "/spin": route_spin,
    "/pid": route_pid,
    "/thread-local": route_thread_local,
    "/scheme": route_scheme,
    "/errors": route_errors,
    "/latin1": route_latin1,
}


def app(environ, start_response):
    """WSGI entry point: dispatch on PATH_INFO."""
    route = ROUTES.get(environ.get("PATH_INFO") or "/")
    if route is None:
        return _respond(start_response, b"not found\n", status="404 Not Found")
    try:
        return route(environ, start_response)
    except BadRequest as exc:
        return _respond(start_response, ("%s\n" % exc).encode(),
                        status="400 Bad Request")


application = app
