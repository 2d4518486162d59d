"""Fail on any import cycle between modules of our packages, type-only and function-level included.

import-linter's contracts say which layer may import which; this check says no two modules
import each other, directly or through others (grimp's graph counts TYPE_CHECKING imports).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import grimp

PACKAGES = ("dataplane", "controlplane")


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(m for m in graph.modules if m.split(".")[0] in PACKAGES)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def children_of(module: str) -> Iterator[str]:
        return iter(sorted(graph.find_modules_directly_imported_by(module)))

    for root in modules:
        if root in index:
            continue
        work = [(root, children_of(root))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child.split(".")[0] not in PACKAGES:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, children_of(child)))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def main() -> int:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    found = cycles(graph)
    for component in found:
        print("import cycle:", " <-> ".join(component))
        for module in component:
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                if imported in component:
                    print(f"    {module} -> {imported}")
    if not found:
        print("no import cycles in", ", ".join(PACKAGES))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
