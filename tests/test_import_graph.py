"""The floor plan of `agents_app`, checked on its import graph: no import loops between its
modules, and no import from a lower floor up to a higher one.

grimp reads every `import` statement of the package, module level and inside functions
alike, so a lazy import does not hide a dependency. Imports under `if TYPE_CHECKING:` never
run, so they cannot make a loop and are left out of the loop check; they still must point
down the floors (a type hint naming a class above is a dependency on it all the same), which
is why turns/ and think/ type agents with Protocols (turns/agent_interface.py, think/host.py).

Floors, top to bottom (a module may import its own room and anything on a lower floor; rooms
on one floor do not import each other):

* wiring: `apps`, `admin`, `models`, `migrations`, `management`, `routing` (the WebSocket
  routes of both front doors) and `demo_agents`. They assemble the rest and nothing imports
  them back.
* `ui` | `transport`: the chat page and the agent protocol (WebSocket, HTTP, OpenAI API,
  webhooks). Two front doors that never import each other.
* `agents` (agent.py, chat_agent.py, think_agent.py and the public import path): the classes
  an author subclasses.
* `sandbox` | `mcp`: tools and extensions an agent plugs in (sandboxed JavaScript, MCP
  servers); they see agents only through `agents.tools` and the engine's broadcast.
* `think` | `tasks`: the model loop and its features; the Celery tasks that run turns and
  schedules. Both drive the engine; neither needs the other.
* `turns`: the turn engine. It knows agents only through turns/agent_interface.py.
* `agents.hooks`, then `agents.tools`: the author's vocabulary (tool and hook types), plain
  values the model loop, sandbox and MCP speak in; they import nothing of ours but tools.
* `gateway`: every model call (routing, fallbacks, cache, limits, call log); it wraps
* `providers`: which model, which client, provider errors and message conversion.
* `limits`: the deployment's per-user turn and session limits (turns, front doors and the
  gateway's budgets consult them); reads the database only.
* `storage`: models, transcript, chunk log, workspace, connections.
* `protocol`: the wire format; imports nothing of ours.
* `testing` | `log_redaction`: the fault points, the turn timeline and the fake model server, and the log
  filter that settings installs; plain modules that import nothing of ours.

Every module must sit on a floor: a new top-level module fails here until it is placed.
"""
from __future__ import annotations

from pathlib import Path

import grimp
import pytest

PACKAGE = "agents_app"
FLOORS: list[list[tuple[str, ...]]] = [
    [("apps", "admin", "models", "migrations", "management", "routing", "demo_agents")],
    [("ui",), ("transport",)],
    [("agents",)],
    [("sandbox",), ("mcp",)],
    [("think",), ("tasks",)],
    [("turns",)],
    [("agents.hooks",)],
    [("agents.tools",)],
    [("gateway",)],
    [("providers",)],
    [("limits",)],
    [("storage",)],
    [("protocol",)],
    [("testing",), ("log_redaction",)],
]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """The imports that run."""
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=True, cache_dir=None)


@pytest.fixture(scope="module")
def typed_graph() -> grimp.ImportGraph:
    """The imports that run and those only the type checker follows."""
    return grimp.build_graph(PACKAGE, cache_dir=None)


def _imports(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Module → the modules of the package it imports directly."""
    modules = graph.modules
    return {module: graph.find_modules_directly_imported_by(module) & modules for module in sorted(modules)}


def _place(module: str) -> tuple[int, int] | None:
    """(floor, room) of a module: the longest room prefix that names it or a parent of it."""
    best: tuple[int, int, int] | None = None
    for floor, rooms in enumerate(FLOORS):
        for room, prefixes in enumerate(rooms):
            for prefix in prefixes:
                name = f"{PACKAGE}.{prefix}"
                if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[2]):
                    best = (floor, room, len(name))
    return None if best is None else best[:2]


def _loops(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    for root in imports:
        if root in index:
            continue
        work = [(root, iter(sorted(imports[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(imports[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        loops.append(sorted(component))
    return loops


def test_no_module_imports_itself_back_through_others(graph: grimp.ImportGraph) -> None:
    loops = _loops(_imports(graph))
    assert not loops, "import loops:\n" + "\n".join(" ↔ ".join(loop) for loop in loops)


def test_every_module_sits_on_a_floor(graph: grimp.ImportGraph) -> None:
    unplaced = sorted(module for module in graph.modules if module != PACKAGE and _place(module) is None)
    assert not unplaced, f"place these modules on a floor in FLOORS: {unplaced}"


def test_imports_only_point_down_the_floors(typed_graph: grimp.ImportGraph) -> None:
    violations = []
    for importer, imported in sorted((a, b) for a, targets in _imports(typed_graph).items() for b in targets):
        here, there = _place(importer), _place(imported)
        if here is None or there is None:
            continue  # the root package, or unplaced (reported above)
        if there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
            violations.append(f"{importer} (floor {here[0]}) imports {imported} (floor {there[0]})")
    assert not violations, "imports against the floor plan:\n" + "\n".join(violations)


def test_the_floors_name_modules_that_exist(graph: grimp.ImportGraph) -> None:
    """A renamed folder must not leave a floor checking nothing."""
    root = Path(__file__).resolve().parent.parent / PACKAGE
    missing = [
        prefix
        for rooms in FLOORS
        for prefixes in rooms
        for prefix in prefixes
        if f"{PACKAGE}.{prefix}" not in graph.modules and not (root / prefix.replace(".", "/")).exists()
    ]
    assert not missing, f"floors name modules that do not exist: {missing}"
