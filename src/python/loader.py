"""ferricorn's Python side of worker set-up and app loading (run in each worker after the fork).

Kept in Python because it is Python's own rules: import a module, evaluate `name` or
`factory(literal, ...)` against it, and explain failures the way Gunicorn users know.
"""
import ast
import importlib
import os
import sys


class AppLoadError(Exception):
    """The app spec is well-formed but does not name a usable WSGI callable."""


def setup_path(cwd, pythonpath):
    """Gunicorn's order: --pythonpath entries, then the working directory, before the rest."""
    front = [p for p in list(pythonpath) + [cwd] if p]
    sys.path[0:0] = [p for p in front if p not in sys.path[: len(front)]]


def sync_environ(current):
    """Make os.environ the process environment as the master left it for this generation.

    The interpreter started in the master took its copy of the environment then; since then the
    master removed what systemd passed (LISTEN_*, NOTIFY_SOCKET) and a reload may have changed
    the -e variables. `current` is the real environment, as bytes.
    """
    env = os.environb
    for key in [k for k in env if k not in current]:
        del env[key]
    for key, value in current.items():
        if env.get(key) != value:
            env[key] = value


def load_app(module_name, expr):
    module = importlib.import_module(module_name)
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppLoadError(
            f"Failed to parse {expr!r} as an attribute name or function call."
        ) from None
    args, kwargs = None, None
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise AppLoadError(
                f"Failed to parse arguments of {expr!r}: only literal values are allowed."
            ) from None
    else:
        raise AppLoadError(
            f"Failed to parse {expr!r} as an attribute name or function call."
        )
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError(f"Failed to find attribute {name!r} in {module_name!r}.") from None
    if args is not None:
        app = app(*args, **kwargs)
        if app is None:
            raise AppLoadError(f"Factory {expr!r} in {module_name!r} returned None.")
    if not callable(app):
        raise AppLoadError(
            f"Application object {name!r} in {module_name!r} must be callable, "
            f"not {type(app).__name__}."
        )
    return app


def describe(exc):
    """One line for the master: `ModuleNotFoundError: No module named 'x'`."""
    if isinstance(exc, AppLoadError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else "the app"
        return f"SyntaxError in {where}: {exc.msg}"
    return f"{type(exc).__name__}: {exc}"


def module_files():
    """The source files of every imported module (what --reload watches)."""
    import importlib.util  # only with --reload: not in every worker

    out = []
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if not isinstance(f, str) or not f:
            continue
        if f.endswith((".pyc", ".pyo")):
            try:
                f = importlib.util.source_from_cache(f)
            except ValueError:
                continue
        out.append(os.path.abspath(f))
    return out
