"""notebooks/walkthrough.ipynb runs top to bottom (a failing cell fails the suite), and is
committed without outputs so that its diffs stay readable."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
nbformat = pytest.importorskip("nbformat", reason="the notebook tests need nbformat and nbclient (the dev extra)")


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the walkthrough has no code"
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count is not None]
    assert not dirty, f"code cells {dirty} carry outputs; clear them before committing (Jupyter: Clear All Outputs)"


@pytest.mark.slow
def test_the_walkthrough_runs_top_to_bottom(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's work folder (kept for its reader) lands here
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, when one fails
    outputs = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                        for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "second time answered from the results cache: True" in outputs
    assert "materialized: ['attribute_probes', 'attribute_report', 'clip_embeddings', 'fused_attributes', " \
           "'fusion_policy', 'raw_images', 'tag_parses']" in outputs
    assert "learned_policy" in outputs and "rows in the product table" in outputs
