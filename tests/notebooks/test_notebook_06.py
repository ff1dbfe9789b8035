"""Notebook 06 runs headless in the quick profile and its recorded metrics hold up."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebook

LENET300_PARAMS = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_deep_compression_quick(run_notebook, png_per_cell):
    run = run_notebook("06_deep_compression")
    m = run.results
    assert sum(png_per_cell(run.output)) >= 6  # every figure and the headless widget view, rendered as images
    assert m["profile"] == "quick" and m["model"] == "lenet300"
    # the file loads back bit-exactly, with exactly the accuracy of the shared model in memory
    assert m["bit_exact"] is True
    assert m["loaded_accuracy"] == m["shared_accuracy"]
    # sizes: against dense FP32, from the file's own bytes
    assert m["dense_bytes"] == 4 * LENET300_PARAMS
    kept = 100 * (0.08 * 784 * 300 + 0.09 * 300 * 100 + 0.26 * 100 * 10) / (784 * 300 + 300 * 100 + 100 * 10)
    assert m["weights_kept_pct"] == pytest.approx(kept, abs=0.01)  # the paper's per-layer rates
    assert 1 < m["pruned_compression_x"] < m["shared_compression_x"] < m["compression_x"]
    assert m["compression_x"] > 30  # 8% of weights at ~9 bits each, plus biases and codebooks
    assert m["gzip_shared_compression_x"] < m["compression_x"]
    layers = {row["layer"]: row for row in m["layers"]}
    assert layers["total (file)"]["bytes"] == m["file_bytes"]
    assert sum(layers[n]["bytes"] for n in ("fc1", "fc2", "fc3")) < m["file_bytes"]
    for n in ("fc1", "fc2", "fc3"):
        assert layers[n]["weight bits (P+Q+H)"] <= 5.05  # Huffman: never longer than 5 fixed bits (+ padding)
        assert layers[n]["codebook + bias"] == "FP16"  # the default value_dtype, stored in 2 bytes a value
    # accuracy: a sane floor for 8k images and 2 epochs, and compression costs little
    assert 80 < m["dense_accuracy"] <= 100
    assert m["loaded_accuracy"] > m["dense_accuracy"] - 3
    # the accuracy change against the dense model carries its paired-bootstrap interval
    assert m["acc_change_ci_low"] <= m["acc_change_ci_high"]
