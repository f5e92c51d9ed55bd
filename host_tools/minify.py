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
    """a, b, ..., z, A, ..., Z, a0, b0, ...: names not in `taken`."""
    import itertools
    import string
    for suffix in itertools.chain([""], (str(i) for i in itertools.count())):
        for c in string.ascii_letters:
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


# ---------------------------------------------------------------- whole programs (the micro:bit profile)
# Identifiers that name something outside the program: the ports' modules and their functions, methods of
# built-in types, the generated micro_model.py's constants. Everything else is renamed.
FOREIGN = {"struct", "gc", "array", "utime", "micropython", "microbit", "uart", "time",
           "read", "readinto", "write", "close", "append", "find", "count", "replace", "encode", "index",
           "collect", "mem_free", "kbd_intr", "opt_level", "ticks_ms", "ticks_diff", "ticks_us", "pack",
           "unpack", "args"}


def _flat_imports(tree: ast.Module) -> None:
    """`try: <import from firmware_py> except ImportError: <flat import>` -> the flat import (the board's
    filesystem is flat); any other `try: <import> except ImportError: <host shim>` -> the import."""
    body = []
    for node in tree.body:
        if isinstance(node, ast.Try) and node.handlers and all(
                isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers):
            host = any(isinstance(n, ast.ImportFrom) and (n.module or "").startswith("firmware_py")
                       for n in node.body)
            body += node.handlers[0].body if host else node.body
        else:
            body.append(node)
    tree.body = body


def _int_literal(node: ast.AST) -> int | None:
    """The int that `node` spells (an int literal, or minus one), else None."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_literal(node.operand)
        return None if inner is None else -inner
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _const_literal(node: ast.AST):
    """An int, or a tuple of ints, that `node` spells; else None."""
    if isinstance(node, ast.Tuple):
        items = [_int_literal(e) for e in node.elts]
        return None if None in items else tuple(items)
    return _int_literal(node)


def _int_constants(trees: dict[str, ast.Module]) -> dict[str, int]:
    """UPPER_CASE = <int or tuple of ints> assigned once at a module's top level: inlined (no global, no name
    on the heap)."""
    found: dict[str, int] = {}
    assigned: dict[str, int] = {}
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                assigned[n.id] = assigned.get(n.id, 0) + 1
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and node.targets[0].id.isupper():
                value = _const_literal(node.value)
                if value is not None:
                    found[node.targets[0].id] = value
    return {k: v for k, v in found.items() if assigned.get(k) == 1}


def _int_node(value) -> ast.expr:
    if isinstance(value, tuple):
        return ast.Tuple([_int_node(v) for v in value], ast.Load())
    return ast.Constant(value) if value >= 0 else ast.UnaryOp(ast.USub(), ast.Constant(-value))


class _Inline(ast.NodeTransformer):
    def __init__(self, consts, modules):
        self.consts = consts
        self.modules = modules

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id in self.consts:
            return ast.copy_location(_int_node(self.consts[node.id]), node)
        return node

    def visit_Attribute(self, node):
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id in self.modules and node.attr in self.consts:
            return ast.copy_location(_int_node(self.consts[node.attr]), node)
        return node


class _Fold(ast.NodeTransformer):
    """Arithmetic on int literals done once, here (the inlined constants leave `16 * 10`, `x - 0`,
    `a if 1 else b`): less source and no run-time work on the board."""
    OPS = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__, ast.FloorDiv: int.__floordiv__,
           ast.Mod: int.__mod__, ast.LShift: int.__lshift__, ast.RShift: int.__rshift__,
           ast.BitAnd: int.__and__, ast.BitOr: int.__or__, ast.BitXor: int.__xor__}

    def visit_BinOp(self, node):
        self.generic_visit(node)
        a, b = _int_literal(node.left), _int_literal(node.right)
        op = self.OPS.get(type(node.op))
        if op is None:
            return node
        if a is not None and b is not None:
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0 or \
                    isinstance(node.op, (ast.LShift, ast.RShift)) and b < 0:
                return node
            return ast.copy_location(_int_node(op(a, b)), node)
        if b == 0 and isinstance(node.op, (ast.Add, ast.Sub, ast.BitOr, ast.BitXor, ast.LShift, ast.RShift)) \
                or b == 1 and isinstance(node.op, (ast.Mult, ast.FloorDiv)):
            return node.left
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        if _int_literal(node.value) == 0 and isinstance(node.op, (ast.Add, ast.Sub)):
            return ast.copy_location(ast.Pass(), node)
        return node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        test = _int_literal(node.test)
        return node if test is None else (node.body if test else node.orelse)


def _drop_unused_imports(tree: ast.Module, own, drop_all: bool = False) -> None:
    """`import <own module> [as x]` whose name the module no longer uses (all its constants were inlined);
    drop_all: every import of those modules."""
    used = set() if drop_all else {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    body = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            node.names = [a for a in node.names if a.name not in own or (a.asname or a.name) in used]
            if not node.names:
                continue
        body.append(node)
    tree.body = body


def _drop_constant_definitions(tree: ast.Module, consts) -> None:
    body = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in consts:
            continue
        if isinstance(node, ast.ImportFrom):
            node.names = [a for a in node.names if a.name not in consts]
            if not node.names:
                continue
        body.append(node)
    tree.body = body


def _identifiers(tree):
    """(node, field) of every identifier in the tree."""
    for n in ast.walk(tree):
        if isinstance(n, ast.Name):
            yield n, "id"
        elif isinstance(n, ast.Attribute):
            yield n, "attr"
        elif isinstance(n, ast.arg):
            yield n, "arg"
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            yield n, "name"
        elif isinstance(n, ast.keyword) and n.arg:
            yield n, "arg"
        elif isinstance(n, ast.ExceptHandler) and n.name:
            yield n, "name"
        elif isinstance(n, ast.alias):
            yield n, "name"
            if n.asname:
                yield n, "asname"
        elif isinstance(n, ast.ImportFrom) and n.module:
            yield n, "module"
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            for i in range(len(n.names)):
                yield n.names, i


def _reuse_local_names(tree: ast.Module, order: list[str], reserved) -> None:
    """Each function's locals renamed again, to the first names of `order` that the function does not
    use otherwise: locals of different functions share names (on MicroPython every distinct identifier,
    local or not, is a string in the qstr pool for good, and the pool grows by doubling)."""
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef) or any(
                isinstance(n, (ast.FunctionDef, ast.Lambda, ast.ClassDef, ast.Nonlocal)) and n is not fn
                for n in ast.walk(fn)):
            continue
        declared = {g for n in ast.walk(fn) if isinstance(n, ast.Global) for g in n.names}
        args = fn.args
        params = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]
                  if a is not None]
        stored = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}
        stored |= {n.name for n in ast.walk(fn) if isinstance(n, ast.ExceptHandler) and n.name}
        stored |= {a.asname or a.name for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))
                   for a in n.names}
        local = (set(params) | stored) - declared
        if any(n in reserved for n in local):
            continue                        # a kept or foreign name bound locally: leave the function alone
        free = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} - local
        pool = (n for n in order if n not in free)
        ranked = sorted(local, key=lambda n: order.index(n) if n in order else len(order))
        new = {n: next(pool) for n in ranked}
        for a in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if a is not None:
                a.arg = new[a.arg]
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and n.id in new:
                n.id = new[n.id]
            elif isinstance(n, ast.ExceptHandler) and n.name in new:
                n.name = new[n.name]
            elif isinstance(n, ast.alias) and (n.asname or n.name) in new:
                n.asname = new[n.asname or n.name]


def minify_program(sources: dict[str, str], keep=frozenset()) -> tuple[dict[str, str], dict[str, str]]:
    """Modules {module name: source} that import each other (flat) -> the same program, smaller, under new
    module names {new name: source}, and the renaming {old: new}: docstrings and comments gone, flat imports, int constants inlined,
    and every identifier that is the program's own (not a builtin, not FOREIGN, not a dunder) renamed
    by one bijection to the shortest names, the most used first (names in `keep` stay). A uniform renaming of identifiers is
    the same program (nothing here looks names up by string); on the micro:bit every distinct name is a
    string on the heap for good, and each global a dictionary slot."""
    import builtins
    import collections
    trees = {}
    for name, src in sources.items():
        tree = ast.parse(src, name)
        _drop_docstrings(tree)
        _flat_imports(tree)
        trees[name] = tree
    consts = _int_constants(trees)
    for name, tree in trees.items():
        _drop_constant_definitions(tree, consts)
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                   if a.name in sources}
        _Inline(consts, aliases).visit(tree)
        _Fold().visit(tree)
        if name not in keep:        # (main.py's imports are there to run the modules)
            _drop_unused_imports(tree, set(sources))
    empty = {name for name, tree in trees.items() if not tree.body and name not in keep}
    for name in empty:              # a module of constants only: all inlined, no module on the board
        del trees[name]
    for tree in trees.values():
        _drop_unused_imports(tree, empty, drop_all=True)
    keep = FOREIGN | set(dir(builtins)) | set(keep)
    uses: collections.Counter = collections.Counter()
    for tree in trees.values():
        for node, field in _identifiers(tree):
            v = node[field] if isinstance(node, list) else getattr(node, field)
            for part in v.split("."):
                uses[part] += 1
    uses.update({m: 0 for m in sources})
    own = [k for k, _ in uses.most_common() if k not in keep and not k.startswith("__")]
    fresh = (n for n in _short_names(keep | {"_"}) if n not in keep)
    mapping = {k: next(fresh) for k in own}
    for tree in trees.values():
        for node, field in _identifiers(tree):
            if isinstance(node, list):
                node[field] = mapping.get(node[field], node[field])
            else:
                setattr(node, field, ".".join(mapping.get(p, p) for p in getattr(node, field).split(".")))
    order = list(mapping.values())
    for tree in trees.values():
        _reuse_local_names(tree, order, keep)
    return {mapping.get(name, name): strip_source(ast.unparse(tree), name) for name, tree in trees.items()}, mapping
