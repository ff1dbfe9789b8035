"""Widget panels: headless behaviour (one render, no widgets), controls, validation."""

from __future__ import annotations

import pytest

from compresslab.views import figures, panel


def test_headless_panel_renders_once_without_widgets(monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_HEADLESS", "1")
    calls = []

    def render(sparsity, scope):
        calls.append((sparsity, scope))
        return panel.View(figure=figures.layer_bars({"fc1": sparsity}, "kept"), metrics={"s": sparsity})

    box = panel.panel(render, {"sparsity": panel.slider(0, 0.99), "scope": panel.choice(["layer", "global"])},
                        {"sparsity": 0.5, "scope": "global"})
    assert box is None and calls == [(0.5, "global")]


def test_interactive_panel_builds_controls_and_rerenders(monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_HEADLESS", "0")
    calls = []

    def render(bits, per_channel):
        calls.append((bits, per_channel))
        return panel.View(metrics={"bits": bits})

    box = panel.build_panel(render, {"bits": panel.int_slider(2, 8), "per_channel": panel.toggle()},
                            {"bits": 4, "per_channel": False}, title="demo")
    assert "compresslab-panel" in box._dom_classes
    slider = box.children[1].children[0]
    slider.value = 6
    assert calls == [(4, False), (6, False)]


@pytest.mark.parametrize("values, match", [({"bits": 9}, "bits"), ({"bits": 4, "other": 1}, "unexpected"),
                                           ({}, "missing")])
def test_panel_validates_values(values, match):
    with pytest.raises(ValueError, match=match):
        panel.panel(lambda **kw: panel.View(), {"bits": panel.int_slider(2, 8)}, values)


def test_controls_validate():
    with pytest.raises(ValueError, match="low < high"):
        panel.slider(1.0, 0.0)
    with pytest.raises(ValueError, match="options"):
        panel.choice([])
    with pytest.raises(ValueError, match="True or False"):
        panel.toggle().check("structured", "yes")


def test_headless_detection(monkeypatch):
    monkeypatch.setenv("COMPRESSLAB_HEADLESS", "1")
    assert panel.headless()
    monkeypatch.setenv("COMPRESSLAB_HEADLESS", "0")
    assert not panel.headless()
    monkeypatch.delenv("COMPRESSLAB_HEADLESS")
    assert panel.headless()  # no IPython kernel in a test process


def test_report_base_table_headline_and_percent():
    from dataclasses import dataclass

    from compresslab.core.metrics import Size
    from compresslab.core.report import Report, fmt_percent

    @dataclass(kw_only=True, repr=False)
    class Demo(Report):
        rank: int = 0

        def headline_extra(self) -> list[str]:
            return [f"rank {self.rank}"]

    report = Demo(accuracy_before=98.5, accuracy_after=98.42134, rank=3, layers=[{"layer": "fc1", "rank": 3}],
                  size_before=Size(100, 100, 400, 400), size_after=Size(40, 40, 160, 160))
    assert list(report.table()["rank"]) == [3]
    html = report._repr_html_()
    assert html.startswith("<p>technique: accuracy 98.50% &rarr; 98.42%") and "rank 3" in html and "fc1" in html
    assert report.compression == 2.5 and report.accuracy_change == pytest.approx(-0.07866)
    assert fmt_percent(None) == "n/a"
