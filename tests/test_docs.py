"""The manual cannot drift from the code: the command line's flags, the environment variables, the error
tree, the defaults the API page and the signature statements show, and the notebook's rendered copy are
each compared with what featx itself declares."""

import argparse
import ast
import importlib
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

DOCS = REPO / "docs"


def section(page: str, heading: str) -> str:
    """The text of ``page`` under the heading ``heading`` (any level), up to the next heading of that level
    or above."""
    lines = (DOCS / page).read_text().splitlines()
    for start, line in enumerate(lines):
        match = re.match(r"(#+) (.*)", line)
        if match and match.group(2).strip() == heading:
            level = len(match.group(1))
            body = []
            for line in lines[start + 1 :]:
                other = re.match(r"(#+) ", line)
                if other and len(other.group(1)) <= level:
                    break
                body.append(line)
            return "\n".join(body)
    raise AssertionError(f"docs/{page} has no heading {heading!r}")


# --- the command line ------------------------------------------------------------------------------------


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every command and sub-command's parser, by its name (``extract``, ``cache compact``), built by the
    function ``featx`` itself runs."""
    from featx import cli

    found = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    name = f"{prefix} {name}".strip()
                    found[name] = child
                    walk(child, name)

    walk(cli.parser(), "")
    return {name: parser for name, parser in found.items() if not _has_subcommands(parser)}


def _has_subcommands(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(action, argparse._SubParsersAction) for action in parser._actions)


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {
        flag
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    }


def test_each_command_section_of_the_cli_page_names_exactly_the_flags_its_parser_takes():
    from featx.cli import NETWORK_COMMANDS

    def named(title: str) -> set[str]:
        return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", section("cli.md", title)))

    problems = []
    for name, parser in commands().items():
        documented = named(f"featx {name}") | (
            named("The network options") if name in NETWORK_COMMANDS else set()
        )
        flags = parser_flags(parser)
        if flags - documented:
            problems.append(f"featx {name}: missing from docs/cli.md: {sorted(flags - documented)}")
        if documented - flags:
            problems.append(f"featx {name}: in docs/cli.md but not a flag: {sorted(documented - flags)}")
    assert not problems, "\n".join(problems)


def test_the_cli_page_has_a_section_for_every_command_and_no_other():
    sections = re.findall(r"^## featx (.+)$", (DOCS / "cli.md").read_text(), flags=re.MULTILINE)
    assert sorted(sections) == sorted(commands())


# --- environment variables -------------------------------------------------------------------------------


def test_every_featx_environment_variable_is_on_the_environment_page():
    sources = [*(REPO / "featx").rglob("*.py"), *(REPO / "pipelines").rglob("*"), REPO / ".ci"]
    sources += [*(REPO / ".ci").rglob("*"), *(REPO / "notebooks").glob("*.ipynb")]
    read = set()
    for path in sources:
        if path.is_file():
            read |= set(re.findall(r"FEATX_[A-Z_]*[A-Z]", path.read_text(errors="replace")))
    page = (DOCS / "environment.md").read_text()
    assert read and not {name for name in read if f"`{name}`" not in page}
    listed = set(re.findall(r"`(FEATX_[A-Z_]+)`", page))
    assert not listed - read, f"on docs/environment.md but read nowhere: {sorted(listed - read)}"


# --- errors ----------------------------------------------------------------------------------------------


def test_the_error_tree_on_the_errors_page_is_the_one_featx_errors_defines():
    from featx import errors

    tree = re.search(r"```\n(FeatxError\n.*?)```", (DOCS / "errors.md").read_text(), flags=re.DOTALL)
    named = set(re.findall(r"^\s*(\w+)", tree.group(1), flags=re.MULTILINE))
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.FeatxError)
    }
    assert named == defined


# --- the API page ----------------------------------------------------------------------------------------


def api_objects() -> list[tuple[str, object]]:
    """Every object a ``::: name`` line of docs/api.md renders, with the members it shows."""
    found = []
    for name in re.findall(r"^::: (\S+)", (DOCS / "api.md").read_text(), flags=re.MULTILINE):
        module, _, attribute = name.rpartition(".")
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError:
            obj = getattr(importlib.import_module(module), attribute)
        found.append((name, obj))
        if inspect.ismodule(obj):
            public = getattr(obj, "__all__", [n for n in vars(obj) if not n.startswith("_")])
            members = [(f"{name}.{n}", getattr(obj, n)) for n in public]
            found += [(n, m) for n, m in members if inspect.isclass(m) or inspect.isfunction(m)]
    for name, obj in list(found):
        if inspect.isclass(obj):
            found += [
                (f"{name}.{n}", m)
                for n, m in vars(obj).items()
                if not n.startswith("_") and inspect.isfunction(m) and m.__doc__
            ]
    return found


def documented_defaults(docstring: str) -> dict[str, str]:
    """The defaults a numpydoc Parameters section states, as mkdocstrings' parser reads them (griffe: the
    first of ``{...}`` choices when no ``default=`` is given)."""
    import logging

    from griffe import Docstring

    logging.getLogger("griffe").setLevel(logging.ERROR)
    sections = Docstring(inspect.cleandoc(docstring), parser="numpy").parse()
    return {
        parameter.name: parameter.default
        for part in sections
        if part.kind.value == "parameters"
        for parameter in part.value
        if parameter.default is not None
    }


def value_of(text: str):
    """A documented default's value: a Python literal, or a dotted name (``featx.inputs.images.MAX_PIXELS
    (about 89 million)``) resolved by import."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        dotted = text.split(" (")[0].strip()
        module, _, attribute = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attribute)


def test_the_defaults_the_api_page_shows_are_the_signatures():
    problems = []
    for name, obj in api_objects():
        if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not obj.__doc__:
            continue
        try:
            signature = inspect.signature(obj)
        except ValueError:  # an exception class without its own __init__
            continue
        for parameter, text in documented_defaults(obj.__doc__).items():
            if parameter not in signature.parameters:
                continue  # several names documented together, or a field documented on its class
            default = signature.parameters[parameter].default
            try:
                documented = value_of(text)
            except (ImportError, AttributeError, ValueError):
                problems.append(f"{name}({parameter}=...): the docstring's default {text!r} is not a value")
                continue
            if documented != default or type(documented) is not type(default):
                problems.append(
                    f"{name}({parameter}=...): the page shows {text}, the signature has {default!r}"
                )
    assert not problems, "\n".join(problems)


def signature_statements() -> list[tuple[str, str]]:
    """Inline code on any page that states a public callable's signature (it holds ``*,``):
    ``PretrainedFeatures(backbone="resnet50", *, weights="DEFAULT", ...)``."""
    import featx

    found = []
    for page in sorted(DOCS.glob("*.md")):
        prose = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
        for span in re.findall(r"`([^`]+)`", prose):
            match = re.match(r"(?:featx\.(?:\w+\.)*)?(\w+)\(", span.strip())
            if match and "*," in span and match.group(1) in featx.__all__:
                found.append((page.name, " ".join(span.split())))
    return found


def test_the_signatures_stated_on_the_pages_hold_the_real_defaults():
    import featx

    statements = signature_statements()
    assert {"transformer.md", "finetuning.md"} <= {page for page, _ in statements}
    problems = []
    for page, text in statements:
        call = ast.parse(re.sub(r"\*,\s*", "", re.sub(r"\.\.\.", "None", text)), mode="eval").body
        name = call.func.attr if isinstance(call.func, ast.Attribute) else call.func.id
        parameters = inspect.signature(getattr(featx, name)).parameters
        for keyword in call.keywords:
            try:
                stated = ast.literal_eval(keyword.value)
            except ValueError:
                continue
            if stated is None and isinstance(keyword.value, ast.Constant) and "..." in text:
                continue  # `backbone=...`: no value stated
            default = parameters[keyword.arg].default if keyword.arg in parameters else "<no such parameter>"
            if stated != default:
                problems.append(
                    f"docs/{page}: {name}({keyword.arg}={stated!r}) but the default is {default!r}"
                )
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The manual, built as CI builds it."""
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=REPO,
        check=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return out


def page_text(html: str) -> str:
    import html as entities

    return entities.unescape(re.sub(r"<[^>]+>", "", html))


def test_the_api_page_shows_no_raw_markup_and_sends_no_one_to_the_readme(site):
    """Sphinx roles, and markdown left raw in a table's type column, show as typed."""
    text = page_text((site / "api" / "index.html").read_text())
    raw = r".{0,40}(?::(?:func|class|meth|mod|attr|data|exc|obj|ref):|\]\[featx|``).{0,40}"
    found = sorted(set(re.findall(raw, text)))
    assert not found, "\n".join(found)
    assert "README" not in text


def test_the_api_docstrings_put_types_in_the_type_column():
    """``name : a sentence`` puts the sentence where mkdocstrings shows the type; numpydoc wants
    ``name : type`` and the description indented below."""
    import logging

    from griffe import Docstring

    logging.getLogger("griffe").setLevel(logging.ERROR)
    prose = []
    for name, obj in api_objects():
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__doc__:
            for part in Docstring(inspect.cleandoc(obj.__doc__), parser="numpy").parse():
                if part.kind.value in ("parameters", "attributes", "returns", "other parameters"):
                    for item in part.value:
                        if len(str(item.annotation or "").split()) > 8:
                            prose.append(f"{name}: {item.name} : {str(item.annotation)[:50]}...")
    assert not prose, "\n".join(prose)


def test_the_pooling_choices_on_the_api_page_are_the_declared_ones(site):
    from featx.options import POOLINGS

    text = page_text((site / "api" / "index.html").read_text())
    assert all(f'"{choice}"' in text for choice in POOLINGS)


# --- the notebook's rendered copy ------------------------------------------------------------------------


def test_the_rendered_notebook_in_the_manual_runs_the_committed_notebooks_code():
    notebook = json.loads((REPO / "notebooks" / "compare_classifiers.ipynb").read_text())
    code = ["".join(cell["source"]).strip() for cell in notebook["cells"] if cell["cell_type"] == "code"]
    rendered = (DOCS / "notebook.md").read_text()
    blocks = [block.strip() for block in re.findall(r"```python\n(.*?)```", rendered, flags=re.DOTALL)]
    assert blocks == code, "docs/notebook.md is stale: run `python notebooks/render.py`"
    assert "<img" in rendered or "![" in rendered  # the figure came with it


def test_the_notebook_uses_only_the_public_api():
    """What it imports comes from ``featx`` itself, or is rendered on the API page."""
    notebook = json.loads((REPO / "notebooks" / "compare_classifiers.ipynb").read_text())
    source = "\n".join("".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code")
    rendered = {name for name, _ in api_objects()}
    outside = []
    for module, names in re.findall(r"^from (featx[\w.]*) import ([\w, ]+)", source, flags=re.MULTILINE):
        for name in (n.strip() for n in names.split(",")):
            if module != "featx" and module not in rendered and f"{module}.{name}" not in rendered:
                outside.append(f"{module}.{name}")
    assert "import featx." not in source
    assert not outside, f"the notebook imports {outside}, outside featx's public API"
