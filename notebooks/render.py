"""Run the experiment notebook on the sample data and write it, with its outputs, as a page of the manual.

    python data/make_sample_data.py        # once
    python notebooks/render.py [--images 1000]

writes docs/notebook.md and its figures under docs/notebook/. The notebook itself stays committed without
outputs; the page is committed, so building the manual executes nothing and needs no network.
tests/test_docs.py fails when the page's code differs from the notebook's: run this script again then.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "compare_classifiers.ipynb"
DOCS = HERE.parent / "docs"
PAGE = DOCS / "notebook.md"
FIGURES = DOCS / "notebook"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images of each dataset (default 1000, the notebook's own)")
    parser.add_argument("--save", metavar="FILE.ipynb", help="also keep the executed notebook there")
    parser.add_argument(
        "--executed", metavar="FILE.ipynb", help="render this executed copy instead of running the notebook"
    )
    args = parser.parse_args()
    if args.executed:
        notebook = nbformat.read(args.executed, as_version=4)
    else:
        notebook = nbformat.read(NOTEBOOK, as_version=4)
        with tempfile.TemporaryDirectory() as cache:
            os.environ["FEATX_NOTEBOOK_IMAGES"] = str(args.images)
            os.environ["FEATX_CACHE"] = cache
            NotebookClient(
                notebook, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
            ).execute()
    if args.save:
        nbformat.write(notebook, args.save)
    FIGURES.mkdir(exist_ok=True)
    for old in FIGURES.glob("*.png"):
        old.unlink()
    PAGE.write_text(markdown(notebook, args.images))
    print(f"wrote {PAGE.relative_to(HERE.parent)} and {len(list(FIGURES.glob('*.png')))} figure(s)")


def markdown(notebook: nbformat.NotebookNode, images: int) -> str:
    """The notebook as a page: markdown cells as they are, code in fences, then what each cell printed or
    showed (text, tables as HTML, figures as PNG files)."""
    parts = [
        "<!-- written by `python notebooks/render.py`; edit notebooks/compare_classifiers.ipynb instead -->\n",
    ]
    figures = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "markdown":
            text = cell.source
            if index == 0:
                text += (
                    f"\n\n!!! note\n    This page is `notebooks/compare_classifiers.ipynb` as executed by "
                    f"`python notebooks/render.py` with `N_IMAGES = {images}`.\n"
                )
            parts.append(text + "\n")
            continue
        if cell.cell_type != "code":
            continue
        parts.append(f"```python\n{cell.source}\n```\n")
        for output in cell.outputs:
            data = output.get("data", {})
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(f"```text\n{output.text.rstrip()}\n```\n")
            elif "image/png" in data:
                figures += 1
                name = f"figure-{figures}.png"
                (FIGURES / name).write_bytes(base64.b64decode(data["image/png"]))
                parts.append(f"![figure {figures}](notebook/{name})\n")
            elif "text/html" in data:
                parts.append(f'<div class="notebook-output" style="overflow-x: auto">\n{html_block(data["text/html"])}\n</div>\n')
            elif "text/plain" in data:
                parts.append(f"```text\n{data['text/plain'].rstrip()}\n```\n")
    return "\n".join(parts)


def html_block(html: str) -> str:
    """A table's HTML as one raw block for Markdown: pandas' inline style dropped, no blank or indented
    lines (either would end the block or turn the rest into code)."""
    html = re.sub(r"<style.*?</style>", "", html, flags=re.DOTALL)
    return "\n".join(line.strip() for line in html.splitlines() if line.strip())


if __name__ == "__main__":
    main()
