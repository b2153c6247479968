"""ferricorn's Python side of the ASGI bridge (run on each ASGI worker's event-loop thread).

Kept in Python because it is asyncio's own business: telling an ASGI app from a WSGI one,
making the loop (uvloop when asked or available), and the coroutine each app call runs in, which
reports how the app's coroutine ended to the Rust side (`cycle.done(exc)`).
"""
import inspect
import sys

# Imported here, on the worker's main thread, before the event loop gets a thread of its own:
# threading takes the thread that first imports it for the main one (`threading.main_thread()`).
# Imported first on the loop's thread (an app module that imports nothing, asyncio imported by
# new_loop), it named that thread; uvloop then installed its signal wake-up from it, which Python
# refuses ("set_wakeup_fd only works in main thread"), and the worker could not start. Cheap, and
# right for WSGI apps too (their pool threads are not the main one either).
import threading  # noqa: F401
import warnings

# asyncio is imported where a loop is made, not here: every worker runs is_asgi(), and importing
# asyncio (which imports ssl, and libssl and libcrypto with it) cost a WSGI worker about 8 MiB.


def is_asgi(app):
    """An `async def app(scope, receive, send)`, or an object whose `__call__` is one."""

    def coroutine_function(f):
        if inspect.iscoroutinefunction(f):
            return True
        # asyncio's check also knows the markers of asgiref and older frameworks; it is
        # deprecated on 3.14, where inspect's check covers those markers. An app marked that
        # way has imported asyncio already.
        asyncio = sys.modules.get("asyncio")
        if asyncio is None:
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return asyncio.iscoroutinefunction(f)

    if coroutine_function(app):
        return True
    call = getattr(type(app), "__call__", None)
    if call is not None and not inspect.isfunction(app) and coroutine_function(call):
        return True
    return False


def new_loop(kind):
    """The event loop for `--asgi-loop KIND` and its name."""
    import asyncio

    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop(), f"uvloop {uvloop.__version__}"
    return asyncio.new_event_loop(), "asyncio"


def serve_forever(loop, fd, drain):
    """Runs the loop on this thread; `drain` runs whenever the server's eventfd is readable."""
    import asyncio

    asyncio.set_event_loop(loop)
    loop.add_reader(fd, drain)
    loop.run_forever()


async def run(app, scope, receive, send, cycle):
    try:
        await app(scope, receive, send)
    except BaseException as exc:  # noqa: BLE001 - the server reports every way an app ends
        cycle.done(exc)
    else:
        cycle.done(None)
