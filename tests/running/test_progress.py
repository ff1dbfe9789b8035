"""Live progress of notebook runs, and the engine that runs kernels over IPC."""

from __future__ import annotations

import io

import nbformat
import pytest

from compresslab.running.progress import CellProgress, register_engine, section_titles


def _cells():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    return [code("profile = 'quick'"), md("# Title\nintro"), code("x = 1"), md("text\n## 1. *First* part"),
            code("y = 2"), code("z = 3"), md("### 2. Second"), code("w = 4")]


def test_section_titles_follow_the_last_heading():
    assert section_titles(_cells()) == ["", "Title", "Title", "1. First part", "1. First part", "1. First part",
                                        "2. Second", "2. Second"]


def test_plain_lines_once_per_section_when_not_a_terminal():
    stream = io.StringIO()
    progress = CellProgress("[1/2] demo", _cells(), stream)
    for index in range(len(_cells())):
        progress.cell(index)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["[1/2] demo  cell 1/5", "[1/2] demo  cell 2/5",
                                                        "[1/2] demo  cell 3/5", "[1/2] demo  cell 5/5"]
    assert "1. First part" in lines[2] and lines[2].endswith("0:00")
    assert "\r" not in stream.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_updating_line_on_a_terminal():
    stream = _Terminal()
    progress = CellProgress("[1/1] demo", _cells(), stream, width=40)
    progress.cell(4)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r\033[K[1/1] demo  cell 3/5") and text.endswith("\r\033[K") and "\n" not in text
    assert all(len(part) <= 40 for part in text.split("\r\033[K"))


@pytest.mark.notebook
def test_engine_reports_cells_and_runs_the_kernel_without_tcp(tmp_path, capfd):
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("n = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_markdown_cell("## Work"), nbformat.v4.new_code_cell("print(n * 7)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "demo.ipynb"
    nbformat.write(nb, source)
    out = papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters={"n": 6},
                                     kernel_name="python3", progress_bar=False, engine_name=register_engine(),
                                     progress_label="[1/1] demo")
    assert out.cells[-1].outputs[0]["text"] == "42\n"
    err = capfd.readouterr().err
    assert "[1/1] demo  cell 3/3 · Work" in err
    assert "without encryption" not in err and "Parent appears to have exited" not in err
    assert not list(tmp_path.glob("kernel-ipc*"))
