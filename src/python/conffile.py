"""ferricorn's runner of Gunicorn config files (gunicorn.conf.py, -c python:MODULE).

The file runs as Gunicorn runs it: as a module called `__config__` (in sys.modules, with
`__file__` set), with the working directory on sys.path; a `python:MODULE` is imported (and
re-imported on a reload). What its names mean is decided by ferricorn's settings table; this
side reports each top-level name with the line that assigns it, and checks the server hooks
as Gunicorn's validate_callable does (a callable, or a "module.attribute" string, taking the
hook's number of positional arguments).
"""
import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
import types


class ConfigError(Exception):
    """A hook that is not a callable of the right arity: (name, message)."""


def run_file(path):
    path = os.fspath(path)
    name = "__config__"
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    _on_path(os.getcwd())
    spec.loader.exec_module(mod)
    return mod


def run_module(name):
    _on_path(os.getcwd())
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


def _on_path(d):
    if d not in sys.path:
        sys.path.insert(0, d)


def assigned_lines(path):
    """Top-level name -> the last line that binds it (also inside if/try/with at top level)."""
    lines = {}
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return lines

    def bind(target, line):
        if isinstance(target, ast.Name):
            lines[target.id] = line
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                bind(t, line)
        elif isinstance(target, ast.Starred):
            bind(target.value, line)

    def visit(stmts):
        for node in stmts:
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    bind(t, node.lineno)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                bind(node.target, node.lineno)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines[node.name] = node.lineno
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    if a.name != "*":
                        lines[(a.asname or a.name).split(".")[0]] = node.lineno
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                bind(node.target, node.lineno)
            for field in ("body", "orelse", "finalbody"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and not isinstance(
                    node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
                ):
                    visit(inner)
            for h in getattr(node, "handlers", None) or []:
                visit(h.body)

    visit(tree.body)
    return lines


def _arity(f):
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in inspect.signature(f).parameters.values() if p.kind in positional)


def check_hook(name, value, arity):
    """Gunicorn's validate_callable: the callable, imported if given as a dotted string."""
    if isinstance(value, str):
        mod_name, _, obj_name = value.rpartition(".")
        if not mod_name:
            raise ConfigError(name, f"{value!r} is not an import string: module.object")
        try:
            value = getattr(importlib.import_module(mod_name), obj_name)
        except ImportError as e:
            raise ConfigError(name, f"cannot import {value!r}: {e}") from None
        except AttributeError:
            raise ConfigError(name, f"cannot load {obj_name!r} from {mod_name!r}") from None
    if not callable(value):
        raise ConfigError(name, f"a server hook must be callable, not {type(value).__name__}")
    try:
        n = _arity(value)
    except (TypeError, ValueError):
        return value
    if name == "post_request":
        # Gunicorn takes post_request(worker, req), (worker, req, environ) or all four.
        if n == 4:
            return value
        if n == 3:
            return lambda worker, req, environ, _resp: value(worker, req, environ)
        if n == 2:
            return lambda worker, req, _environ, _resp: value(worker, req)
        raise ConfigError(name, f"takes {n} positional arguments; it must take 2, 3 or 4")
    if n != arity:
        raise ConfigError(name, f"takes {n} positional arguments; it must take {arity}")
    return value


def kind(value):
    """How ferricorn reads a value: one of none, bool, int, float, str, list, dict, module,
    callable, other."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    if isinstance(value, types.ModuleType):
        return "module"
    if callable(value):
        return "callable"
    return "other"


def names(mod, path, hooks):
    """[(name, line, kind, value)] of the module's names, and {hook name: callable}.
    `hooks` maps each hook name to its arity."""
    lines = assigned_lines(path) if path else {}
    out = []
    found = {}
    for k, v in vars(mod).items():
        if k.startswith("__"):
            continue
        if k in hooks:
            found[k] = check_hook(k, v, hooks[k])
            out.append((k, lines.get(k), "hook", None))
        else:
            out.append((k, lines.get(k), kind(v), v))
    return out, found
