"""The experiment notebook runs top to bottom on the sample data, and is committed without outputs."""

import os

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient

NOTEBOOK = REPO / "notebooks" / "compare_classifiers.ipynb"


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_the_notebook_runs_and_prints_both_verdicts(fashion_manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_NOTEBOOK_IMAGES", "100")  # 10 images per class: the same cells, less waiting
    monkeypatch.setenv("FEATX_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )
    assert "Best: " in printed
    assert "on Fashion-MNIST:" in printed and "on 8x8 digits:" in printed
    figures = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 1
    assert os.listdir(tmp_path / "cache")  # the features went through the on-disk cache
