"""No import cycle inside spotyolo (import-linter's layers, in `make lint`, forbid upward and
sideways imports between parts; this forbids cycles between modules of one part too)."""

from __future__ import annotations

import grimp


def test_no_module_of_spotyolo_imports_itself_back() -> None:
    graph = grimp.build_graph("spotyolo")
    cycles = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.add(" -> ".join((module, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(cycles))
