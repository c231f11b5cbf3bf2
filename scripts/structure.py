"""The tree's shape in figures: modules per folder, import cycles, the longest modules, and
how many function signatures mention ``Any`` or ``dict[str, Any]``.

Imports are read with ``ast`` (module level and inside functions alike: a lazy import is
still a dependency); a cycle is a strongly connected group of two or more modules.
Type-checking-only imports (under ``if TYPE_CHECKING:``) are left out: they cost nothing at
run time and are how a cycle in annotations is broken.

Usage: python scripts/structure.py [--top 5]
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("toolkit", "device_agent")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``path`` imports at run time."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            candidates = [stem, *(f"{stem}.{alias.name}" for alias in node.names)]
        else:
            continue
        for candidate in candidates:
            module = candidate
            while module and module not in known:  # a name imported from a module
                module = module.rpartition(".")[0]
            if module and module != name:
                found.add(module)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def signatures(path: Path) -> tuple[int, int, int]:
    """(functions, signatures mentioning Any, signatures mentioning dict[str, Any])."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    total = with_any = with_dict = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        total += 1
        arguments = node.args
        annotations = [a.annotation for a in (*arguments.posonlyargs, *arguments.args,
                                              *arguments.kwonlyargs, arguments.vararg,
                                              arguments.kwarg) if a is not None]
        text = " ".join(ast.unparse(a) for a in [*annotations, node.returns] if a is not None)
        with_any += "Any" in text
        with_dict += "dict[str, Any]" in text.replace("Dict[", "dict[")
    return total, with_any, with_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    files = {module_name(p): p for package in PACKAGES
             for p in sorted((REPO / package).rglob("*.py"))}
    known = set(files)
    graph = {name: imports_of(path, name, known) for name, path in files.items()}
    folders = Counter(str(path.parent.relative_to(REPO)) for path in files.values())
    print("modules per folder:")
    for folder, count in sorted(folders.items()):
        print(f"  {folder + '/':<24} {count}")
    found = cycles(graph)
    print(f"import cycles: {len(found)}")
    for group in found:
        print("  " + " <-> ".join(group))
    lengths = sorted(((len(p.read_text(encoding="utf-8").splitlines()), n)
                      for n, p in files.items()), reverse=True)
    print("longest modules:")
    for lines, name in lengths[:args.top]:
        print(f"  {name:<36} {lines} lines")
    counted = [signatures(path) for path in files.values()]
    total = sum(c[0] for c in counted)
    print(f"function signatures: {total}; mentioning Any: {sum(c[1] for c in counted)}; "
          f"mentioning dict[str, Any]: {sum(c[2] for c in counted)}")


if __name__ == "__main__":
    main()
