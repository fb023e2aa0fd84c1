#!/usr/bin/env python3
"""Finds import cycles between the modules of each crate, and prints the module graph.

Each `.rs` file under `crates/*/src` is a module. A reference to another module
(`crate::a::b::Item`, `super::c::Item`, or a name the crate root or a module re-exports
with `pub use`) is an edge. Parents and children naturally refer to each other (a
`mod.rs` uses its children; children use their parent's types), so an edge between two
modules is lifted to the two siblings under their lowest common ancestor: an edge from
`session::lifecycle` to `metrics` counts as `session -> metrics`. The graph of siblings
under every module must then be acyclic. Test-only code (`#[cfg(test)] mod ...` blocks,
`tests.rs` files) is left out.

Usage: scripts/module-cycles.py [--graph]   exit status 1 when a cycle is found.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_path(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)]` module blocks (from their start to the file's end, where
    they live in this codebase) and comments."""
    match = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\(\w+\))?\s+)?mod \w+\s*\{", text, re.M)
    if match:
        text = text[: match.start()]
    text = re.sub(r"//[^\n]*", "", text)
    return text


def expand(prefix: str, body: str) -> list:
    """Expands `a::{b, c::{d, e}}` into paths."""
    out = []
    depth = 0
    item = ""
    for ch in body + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            item = item.strip()
            if item:
                m = re.match(r"^([\w:]*?)::\{(.*)\}$", item, re.S)
                if m:
                    out += expand(prefix + m.group(1) + "::", m.group(2))
                else:
                    out.append(prefix + item.split(" as ")[0].strip())
            item = ""
        else:
            item += ch
    return out


def references(text: str) -> list:
    """Every path that starts with `crate::`, `super::` or `self::`."""
    paths = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text, re.S):
        whole = m.group(1)
        b = re.match(r"^([\w:]*?)::\{(.*)\}$", whole, re.S)
        paths += expand(b.group(1) + "::", b.group(2)) if b else [whole.split(" as ")[0].strip()]
    for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
        paths.append(m.group(1))
    return paths


def resolve(current: tuple, path: str, is_dir_module: bool) -> list:
    segments = path.split("::")
    base = list(current)
    while segments and segments[0] in ("crate", "super", "self"):
        head = segments.pop(0)
        if head == "crate":
            base = []
        elif head == "super":
            base = base[:-1]
    return base + segments


def crate_graph(src: Path):
    files = {}
    for file in sorted(src.rglob("*.rs")):
        if file.name == "tests.rs" or "tests" in file.relative_to(src).parts[:-1]:
            continue
        files[module_path(src, file)] = strip_tests(file.read_text())
    modules = set(files)
    reexports = {}
    for module, text in files.items():
        names = {}
        for m in re.finditer(r"\bpub(?:\([\w:]+\))?\s+use\s+([^;]*);", text, re.S):
            whole = m.group(1)
            b = re.match(r"^([\w:]*?)::\{(.*)\}$", whole, re.S)
            for p in expand(b.group(1) + "::", b.group(2)) if b else [whole]:
                target = resolve(module, p if p.split("::")[0] in ("crate", "super", "self") else "self::" + p, False)
                names[p.split("::")[-1]] = target
        reexports[module] = names

    def target_module(segments, depth=0):
        for n in range(len(segments), -1, -1):
            prefix = tuple(segments[:n])
            if prefix in modules:
                rest = segments[n:]
                if rest and depth < 8 and rest[0] in reexports.get(prefix, {}):
                    via = reexports[prefix][rest[0]]
                    if tuple(via[:-1]) != prefix:
                        return target_module(via + rest[1:], depth + 1)
                return prefix
        return None

    edges = set()
    for module, text in files.items():
        for path in references(text):
            target = target_module(resolve(module, path, False))
            if target is None or target == module:
                continue
            common = 0
            while common < min(len(module), len(target)) and module[common] == target[common]:
                common += 1
            if common == len(module) or common == len(target):
                continue  # an ancestor and its descendant
            edges.add((module[: common + 1], target[: common + 1]))
    return edges


def cycles(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    found = []
    state = {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def main():
    show = "--graph" in sys.argv
    status = 0
    for src in sorted(ROOT.glob("crates/*/src")):
        crate = src.parent.name
        edges = crate_graph(src)
        name = lambda m: "::".join(m) or "(root)"
        if show:
            print(f"## {crate}")
            for a, b in sorted(edges):
                print(f"  {name(a)} -> {name(b)}")
        for cycle in cycles(edges):
            status = 1
            print(f"cycle in {crate}: " + " -> ".join(name(m) for m in cycle))
    if status == 0:
        print("no module cycles in", ", ".join(sorted(p.parent.name for p in ROOT.glob("crates/*/src"))))
    sys.exit(status)


if __name__ == "__main__":
    main()
