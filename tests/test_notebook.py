"""docs/quickstart.ipynb runs on a real Jupyter kernel (nbclient + ipykernel), as a user would run it."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "quickstart.ipynb"


def test_the_notebook_is_kept_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_the_quickstart_notebook_runs_on_a_real_kernel(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a cell that raises fails the test (CellExecutionError)
    outputs = [c.outputs for c in nb.cells if c.cell_type == "code"]
    html = [o["data"]["text/html"] for cell in outputs for o in cell if "text/html" in o.get("data", {})]
    text = "".join(o.get("text", "") for cell in outputs for o in cell if o.get("output_type") == "stream")
    assert any("imgcls run" in h and "data:image/png" in h for h in html)  # the run: summary and curves
    assert any("imgcls evaluation" in h for h in html) and any("imgcls comparison" in h for h in html)
    assert any(h.count("data:image/jpeg") == 3 for h in html)  # three predictions, three thumbnails
    assert any("imgcls check-data" in h for h in html)
    assert "--lr must be > 0" in text  # the error cell prints the flag's one-line message
    assert "Traceback" not in text
