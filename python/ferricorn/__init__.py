"""ferricorn: a systemd-native application server for Python WSGI apps.

Installed with pip into the app's virtualenv, ``venv/bin/ferricorn`` (or
``venv/bin/python -m ferricorn``) runs the server in this interpreter: the
arguments go to the Rust extension module, which runs the same master and
workers as the standalone ``ferricorn`` binary.
"""

import sys
import sysconfig

__all__ = ["main"]


def main(argv=None):
    """Run ferricorn with ``argv`` (default: ``sys.argv``); return the exit status."""
    # Arguments that are not UTF-8 (surrogate-escaped by Python) arrive with U+FFFD, as the
    # standalone binary reads them.
    args = [
        str(a).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        for a in (sys.argv if argv is None else argv)
    ]
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        print(
            "ferricorn: error: free-threaded Python (%d.%dt) is not supported; "
            "use a regular build of CPython" % sys.version_info[:2],
            file=sys.stderr,
        )
        return 2
    from ferricorn._ferricorn import main as run

    return run(args)
