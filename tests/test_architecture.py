"""The shape of the package (see README, "How featx is built"): data flows one way, modules stay small."""

import ast
from pathlib import Path

import featx

PACKAGE = Path(featx.__file__).parent
MAX_LINES = 320  # "about 300": a module longer than that says why in its docstring


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_at_load_time(path: Path) -> set[str]:
    """featx modules imported when ``path`` is imported: top-level imports, not TYPE_CHECKING or lazy ones.

    ``from featx.pkg import sub`` depends on the submodule ``sub`` (and the package's own __init__)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("featx"):
            submodules = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("featx")}
    return found


def test_no_featx_module_imports_one_that_imports_it_back():
    graph = {name: imports_at_load_time(path) - {name} for name, path in MODULES.items()}
    cycles = []

    def walk(name, stack):
        for dep in graph.get(name, ()):
            if dep in stack:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif len(stack) < 30:
                walk(dep, stack + [dep])

    for name in graph:
        walk(name, [name])
    assert not cycles, cycles[:3]


def test_no_module_is_much_longer_than_300_lines_without_saying_why():
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()
            if len(path.read_text().splitlines()) > MAX_LINES and "lines" not in (ast.get_docstring(ast.parse(path.read_text())) or "")}
    assert not long, long


def test_the_registry_mechanism_names_no_model():
    source = (PACKAGE / "registry.py").read_text().lower()
    assert not any(family in source for family in ("resnet", "vgg", "efficientnet", "import timm"))
    assert imports_at_load_time(PACKAGE / "registry.py").isdisjoint({"featx.zoo", "featx.network", "featx.extract"})


def test_readme_says_which_file_holds_each_module():
    section = (PACKAGE.parent / "README.md").read_text().split("## How featx is built")[1].split("\n## ")[0]
    unnamed = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")
               and path.name not in section and str(path.relative_to(PACKAGE)) not in section]
    assert unnamed == [], f"README's 'How featx is built' does not name {unnamed}"
