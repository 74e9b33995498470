"""The shape of the package (docs/architecture.md): packages by role, data flowing one way, one
exception root, modules that stay small."""

import ast
import inspect
from pathlib import Path

import featx

PACKAGE = Path(featx.__file__).parent
DOCS = PACKAGE.parent / "docs"
MAX_LINES = 350  # a module reads in one sitting
ROLES = {"models", "inputs", "cache", "engines", "estimators", "evaluate", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def featx_imports(path: Path) -> set[str]:
    """Every featx module ``path`` imports: at the top, inside functions, under TYPE_CHECKING, or by name
    through importlib (a string that names a featx module). ``from featx.pkg import sub`` depends on the
    submodule ``sub``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("featx"):
            submodules = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("featx")}
        elif (
            isinstance(node, ast.Constant) and str(node.value).startswith("featx.") and node.value in MODULES
        ):
            found.add(node.value)
    return found


def test_no_featx_module_imports_one_that_imports_it_back_not_even_lazily_or_for_types():
    graph = {name: featx_imports(path) - {name} for name, path in MODULES.items()}
    cycles = []

    def walk(name, stack):
        for dep in graph.get(name, ()):
            if dep in stack:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif len(stack) < 30:
                walk(dep, stack + [dep])

    for name in graph:
        walk(name, [name])
    assert not cycles, cycles[:3]


def test_the_top_level_holds_the_packages_by_role_and_only_a_few_entry_modules():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert packages == ROLES
    assert modules <= {
        "__init__",
        "__main__",
        "errors",
        "options",
        "_machine",
        "_files",
        "extract",
        "job",
        "feature_files",
    }


def test_no_module_is_longer_than_350_lines():
    long = {
        name: len(path.read_text().splitlines())
        for name, path in MODULES.items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert not long, long


def test_every_exception_featx_defines_derives_from_featx_error():
    strays = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id == "Exception")
                for b in node.bases
            ):
                bases = {b.id for b in node.bases if isinstance(b, ast.Name)}
                rooted = "FeatxError" in bases or any(
                    issubclass(getattr(featx.errors, b, object), featx.errors.FeatxError) for b in bases
                )
                if not rooted and (name, node.name) != ("featx.errors", "FeatxError"):
                    strays.append(f"{name}.{node.name}")
    assert strays == []


def test_the_public_surface_is_what_featx_exports_and_each_name_resolves():
    # the stub's __all__ (what type checkers re-export) names exactly what lazy_loader loads from its imports
    stub = ast.parse((PACKAGE / "__init__.pyi").read_text())
    listed = next(node.value for node in stub.body if isinstance(node, ast.Assign))
    assert sorted(ast.literal_eval(listed)) == sorted(featx.__all__)
    for name in featx.__all__:
        assert getattr(featx, name) is not None
    assert {"CORAL", "FineTunedClassifier", "run_job"} <= set(featx.__all__)
    for name in featx.__all__:
        obj = getattr(featx, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"featx.{name} has no docstring"


def test_the_registry_mechanism_names_no_model():
    source = (PACKAGE / "models" / "_registry.py").read_text().lower()
    assert not any(family in source for family in ("resnet", "vgg", "efficientnet", "import timm"))
    assert featx_imports(PACKAGE / "models" / "_registry.py").isdisjoint(
        {"featx.models.zoo", "featx.models.network", "featx.extract"}
    )


def test_the_architecture_page_names_every_module():
    page = (DOCS / "architecture.md").read_text()
    unnamed = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and str(path.relative_to(PACKAGE)) not in page
    ]
    assert unnamed == [], f"docs/architecture.md does not name {unnamed}"


def test_every_featx_name_the_scripts_beside_the_package_import_exists():
    """benchmarks/, pipelines/, notebooks/ and tests/ import featx by name; a name moved out from under
    them (``featx.extract.open_store``) broke a GPU benchmark that no CPU run imports."""
    import importlib

    missing = []
    for folder in ("benchmarks", "pipelines", "notebooks", "tests"):
        for path in sorted((PACKAGE.parent / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "featx":
                    module = importlib.import_module(node.module)
                    missing += [
                        f"{path.relative_to(PACKAGE.parent)}: {node.module}.{alias.name}"
                        for alias in node.names
                        if not hasattr(module, alias.name) and f"{node.module}.{alias.name}" not in MODULES
                    ]
                elif isinstance(node, ast.Import):  # import featx.inputs.images as images
                    missing += [
                        f"{path.relative_to(PACKAGE.parent)}: {alias.name}"
                        for alias in node.names
                        if alias.name.split(".")[0] == "featx" and alias.name not in MODULES
                    ]
    assert missing == []
