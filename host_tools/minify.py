"""Shrink MicroPython sources for boards that compile them on board (the micro:bit's 1.9.2 fails above
~3 KB of dense code per module, and its filesystem holds ~15 KB): the one place that strips them.

Through `ast`: docstrings and comments go, the code is re-emitted by `ast.unparse` (same program), and the
indentation becomes one space per level (ast.unparse writes every string literal on one line, so every
leading run of spaces is indentation).
"""
from __future__ import annotations

import ast


def _drop_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                body.pop(0)
                if not body:
                    body.append(ast.Pass())


def strip_source(source: str, name: str = "<source>") -> str:
    """The same module without docstrings, comments and wide indentation."""
    tree = ast.parse(source, name)
    _drop_docstrings(tree)
    lines = []
    for line in ast.unparse(tree).splitlines():
        body = line.lstrip(" ")
        lines.append(" " * ((len(line) - len(body)) // 4) + body)
    return "\n".join(lines) + "\n"


def _short_names(taken: set[str]):
    """a, b, ..., z, a0, b0, ...: names not in `taken`."""
    import itertools
    import string
    for suffix in itertools.chain([""], (str(i) for i in itertools.count())):
        for c in string.ascii_lowercase:
            if c + suffix not in taken:
                yield c + suffix


def _rename_locals(tree: ast.Module) -> None:
    """Give every function's parameters and local variables the shortest free names: on MicroPython
    every identifier becomes a permanent string in the heap, and the source shrinks by a third.
    Functions with nested functions or global/nonlocal statements are left alone (their names are shared)."""
    taken = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    taken |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    taken |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
              for a in n.names}
    taken |= set(dir(__builtins__)) if isinstance(__builtins__, dict) is False else set(__builtins__)
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        inner = [n for n in ast.walk(fn) if n is not fn and isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.Global, ast.Nonlocal))]
        if inner:
            continue
        args = fn.args
        params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        params += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        imports = [a for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names]
        if any("." in a.name and not a.asname and not isinstance(n, ast.ImportFrom) for a in imports):
            continue                # `import a.b` binds `a`: leave such functions alone
        local = set(params) | {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)
                               and isinstance(n.ctx, ast.Store)} | {a.asname or a.name for a in imports}
        fresh = _short_names(taken)
        mapping = {name: next(fresh) for name in sorted(local)}
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None:
                a.arg = mapping[a.arg]
        for a in imports:
            a.asname = mapping[a.asname or a.name]
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and n.id in mapping:
                n.id = mapping[n.id]


def minify_source(source: str, name: str = "<source>") -> str:
    """strip_source, and locals renamed to the shortest free names (for on-board compilers)."""
    tree = ast.parse(source, name)
    _drop_docstrings(tree)
    _rename_locals(tree)
    return strip_source(ast.unparse(tree), name)
