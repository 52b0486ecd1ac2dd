"""The package's shape, read from the source (ast): no import cycles, and the core never imports an adapter."""
from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Folder -> import name: the wheel maps models/ and streams/ to riskmon.models and riskmon.streams.
PACKAGES = {"models": "riskmon.models", "streams": "riskmon.streams"}
ADAPTER_LIBS = ("faust", "mode", "aiokafka", "kafka", "confluent_kafka", "prometheus_client", "aiohttp")


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    out = {}
    for folder in PACKAGES:
        for f in sorted((root / folder).rglob("*.py")):
            out[_module_name(f, root)] = f
    return out


def imports(name: str, path: pathlib.Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package, top-level names of everything else) that ``path`` imports, anywhere in it."""
    inner: set[str] = set()
    outer: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import x" imports the module pkg.x when there is one.
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t in known:
                inner.add(t)
            elif t.startswith("riskmon."):
                inner.add(t)  # a module that does not exist: reported by the caller
            else:
                outer.add(t.split(".")[0])
    inner.discard(name)
    return inner, outer


def graph(root: pathlib.Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    src = _sources(root)
    known = set(src)
    edges, libs = {}, {}
    for name, path in src.items():
        edges[name], libs[name] = imports(name, path, known)
    return edges, libs


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in edges:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_is_read_from_every_module() -> None:
    edges, _ = graph()
    assert len(edges) >= 30
    assert "riskmon.models.step" in edges["riskmon.models.monitor"]
    assert all(t in edges for deps in edges.values() for t in deps), "an import names a module that does not exist"


def test_no_import_cycles() -> None:
    edges, _ = graph()
    assert cycles(edges) == []


def test_the_core_imports_no_adapter() -> None:
    edges, libs = graph()
    core = [m for m in edges if m.startswith("riskmon.models")]
    assert len(core) >= 15
    bad = {m: sorted({d for d in edges[m] if not d.startswith("riskmon.models")} | (libs[m] & set(ADAPTER_LIBS)))
           for m in core}
    assert {m: v for m, v in bad.items() if v} == {}


def test_the_checks_catch_a_cycle_and_an_adapter_import(tmp_path: pathlib.Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "streams").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "streams" / "__init__.py").write_text("")
    (tmp_path / "models" / "a.py").write_text("from .b import x\nimport faust\n")
    (tmp_path / "models" / "b.py").write_text("from riskmon.models import a\nfrom riskmon.streams.c import y\n")
    (tmp_path / "streams" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from riskmon.models.a import z\n")
    edges, libs = graph(tmp_path)
    assert cycles(edges) == [["riskmon.models.a", "riskmon.models.b", "riskmon.streams.c"]]  # TYPE_CHECKING imports count
    assert edges["riskmon.models.b"] == {"riskmon.models.a", "riskmon.streams.c"}
    assert "faust" in libs["riskmon.models.a"]


# Faust internals riskmon uses: only streams/faust_internals.py may name them.
FAUST_INTERNALS_MODULE = "riskmon.streams.faust_internals"
FAUST_PRIVATE_NAMES = {
    "unacked", "tracked", "acking_topics", "flow_control", "consumer_generation_id", "generation_id",
    "persist_offset_on_commit", "set_persisted_offset", "maybe_start_producer", "in_transaction",
    "spinner", "changelog_topic", "AIOKafkaConsumerThread",
}


def private_uses(path: pathlib.Path) -> list[str]:
    """Where ``path`` reaches into another object's private attributes or Faust's internals (line: what)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and owner not in ("self", "cls"):
                out.append(f"{node.lineno}: .{name}")
            elif name in FAUST_PRIVATE_NAMES or (
                    name == "buffer" and isinstance(node.value, ast.Attribute) and node.value.attr == "producer"):
                out.append(f"{node.lineno}: .{name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("faust", "mode"):
            out += [f"{node.lineno}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            if any(part.startswith("_") or part in ("drivers", "transport") for part in node.module.split(".")):
                out.append(f"{node.lineno}: {node.module}")
    return sorted(out, key=lambda s: int(s.split(":")[0]))


def test_faust_internals_are_touched_in_one_module_only() -> None:
    src = _sources()
    assert FAUST_INTERNALS_MODULE in src
    found = {m: private_uses(p) for m, p in src.items() if m.startswith("riskmon.streams") and m != FAUST_INTERNALS_MODULE}
    assert {m: v for m, v in found.items() if v} == {}
    assert len(private_uses(src[FAUST_INTERNALS_MODULE])) >= 10  # the scan does see them where they are


def test_the_scan_catches_a_private_touch(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("from faust.streams import _current_event\nfrom faust.transport.consumer import Consumer\n"
                 "def f(app, self):\n    app.consumer._committed_offset.get(1)\n    self._mine = app.producer.buffer\n")
    assert private_uses(f) == ["1: faust.streams._current_event", "2: faust.transport.consumer", "4: ._committed_offset",
                               "5: .buffer"]


def test_faust_internals_refuse_another_faust_version() -> None:
    from riskmon.streams import faust_internals

    faust_internals.check_version(faust_internals.FAUST_VERSION)
    try:
        faust_internals.check_version("0.16.0")
    except RuntimeError as exc:
        assert "faust-streaming 0.15.3" in str(exc) and "0.16.0 is installed" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("another Faust version was accepted")


def test_the_adapters_do_not_import_the_tools() -> None:
    """bench, soak, evaluate and report sit in streams/tools; only the CLI reaches them."""
    edges, _ = graph()
    tools = {m for m in edges if m.startswith("riskmon.streams.tools.")}
    assert {"riskmon.streams.tools.bench", "riskmon.streams.tools.report"} <= tools
    adapters = [m for m in edges if m.startswith("riskmon.streams") and m not in tools
                and m not in ("riskmon.streams.cli", "riskmon.streams.tools")]
    assert {m: sorted(edges[m] & tools) for m in adapters if edges[m] & tools} == {}
