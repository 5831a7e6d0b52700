"""The layout's rules, read from the source: who may import whom, and who writes Redis.

The README's layout section states them; this test walks the syntax tree of every module
so that a change breaking one fails here, naming the file and line. Each checker is also
run on a small snippet that breaks its rule, so that a checker that finds nothing
because it looks at nothing fails too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: redis-py methods that write (or run scripts that write); reading is free for anyone.
REDIS_WRITES = frozenset(
    {
        "append", "copy", "decr", "decrby", "delete", "eval", "evalsha", "expire", "expireat",
        "fcall", "getdel", "getset", "hdel", "hincrby", "hincrbyfloat", "hmset", "hset",
        "hsetnx", "incr", "incrby", "linsert", "lpop", "lpush", "lrem", "lset", "ltrim",
        "mset", "msetnx", "persist", "pexpire", "psetex", "publish", "register_script",
        "rename", "rpop", "rpush", "sadd", "set", "setex", "setnx", "smove", "spop", "srem",
        "unlink", "xack", "xadd", "xautoclaim", "xclaim", "xdel", "xgroup_create",
        "xgroup_destroy", "xreadgroup", "xtrim", "zadd", "zincrby", "zpopmax", "zpopmin",
        "zrem", "zremrangebyscore", "flushall", "flushdb",
    }
)  # fmt: skip
#: Names under which code holds a raw redis-py client (``client``, ``parts.redis``...).
CLIENT_NAMES = ("client", "redis")


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, dotted module)`` of every import, at any depth (lazy imports count)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def library_imports_service(tree: ast.AST) -> list[str]:
    return [
        f"line {n}: {m}" for n, m in imported(tree) if m == "service" or m.startswith("service.")
    ]


def command_imports_command(tree: ast.AST, own: str) -> list[str]:
    """Imports of another ``service.commands`` module (``_common`` is not a command)."""
    found = []
    for line, name in imported(tree):
        parts = name.split(".")
        if parts[:2] == ["service", "commands"] and len(parts) > 2:
            other = parts[2]
            if other not in (own, "_common"):
                found.append(f"line {line}: {name}")
    return found


def _holder(node: ast.expr) -> str:
    """The last name of the expression a method is called on (``parts.redis`` → redis)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def redis_writes(tree: ast.AST) -> list[str]:
    """Calls of a Redis write command on something named like a raw client."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in REDIS_WRITES
            and any(name in _holder(node.func.value).lower() for name in CLIENT_NAMES)
        ):
            found.append(f"line {node.lineno}: .{node.func.attr}()")
    return found


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ------------------------------------------------------------------ the checkers bite


def test_each_checker_finds_what_breaks_its_rule() -> None:
    assert library_imports_service(ast.parse("def f():\n    from service.wiring import tracker\n"))
    assert library_imports_service(ast.parse("import service.queue.keys\n"))
    assert not library_imports_service(ast.parse("import services_of_mine\n"))
    assert command_imports_command(ast.parse("from service.commands.label import x\n"), "round")
    assert command_imports_command(ast.parse("from service.commands import label\n"), "round")
    assert not command_imports_command(
        ast.parse("from service.commands._common import x\nfrom service import wiring\n"), "round"
    )
    assert redis_writes(ast.parse("parts.redis.set('lock', 1, nx=True)\n"))
    assert redis_writes(ast.parse("queue.client.xadd('k', {})\n"))
    assert redis_writes(ast.parse("client.hset('k', 'f', 'v')\n"))
    assert not redis_writes(ast.parse("self.stop.set()\nclient.hgetall('k')\n"))


# ------------------------------------------------------------------ the rules hold


@pytest.mark.parametrize("path", modules("finkvra"), ids=lambda p: str(p.relative_to(REPO)))
def test_the_library_never_imports_the_service(path: Path) -> None:
    assert library_imports_service(parse(path)) == []


@pytest.mark.parametrize(
    "path", modules("service/commands"), ids=lambda p: str(p.relative_to(REPO))
)
def test_no_command_imports_another(path: Path) -> None:
    assert command_imports_command(parse(path), path.stem) == []


OUTSIDE_QUEUE = [p for p in modules("service") if not p.is_relative_to(REPO / "service" / "queue")]


@pytest.mark.parametrize("path", OUTSIDE_QUEUE, ids=lambda p: str(p.relative_to(REPO)))
def test_only_service_queue_writes_redis(path: Path) -> None:
    assert redis_writes(parse(path)) == []


def test_the_queue_package_is_where_redis_is_written() -> None:
    """The check above looks at real writes: service/queue/ has them."""
    assert any(redis_writes(parse(p)) for p in modules("service/queue"))


def test_every_package_says_what_it_holds_and_may_import() -> None:
    for init in sorted((REPO / "service").rglob("__init__.py")) + [REPO / "finkvra/__init__.py"]:
        doc = ast.get_docstring(parse(init)) or ""
        if init.parent.name in ("static", "templates"):
            continue
        assert "import" in doc, f"{init.relative_to(REPO)}: say what the package may import"
