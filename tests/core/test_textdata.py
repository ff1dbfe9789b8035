"""The byte corpus: files split by path hash, fixed budgets, windows with next-byte targets."""

from __future__ import annotations

import hashlib

import pytest
import torch

from compresslab.core import profiles, textdata
from compresslab.core.training import TrainConfig, evaluate, train


def write_corpus(root, n_files: int = 40, size: int = 300) -> dict[str, bytes]:
    files = {}
    for i in range(n_files):
        rel = f"pkg{i % 3}/mod{i}.py" if i % 2 else f"mod{i}.py"
        body = (f"# module {i}\n" + f"def f(x):\n    return x + {i}\n") * (size // 30)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        files[rel] = body.encode()
    (root / "tests").mkdir()
    (root / "tests" / "test_skip.py").write_text("skipped")
    (root / "notes.txt").write_text("not python")
    return files


def test_corpus_files_sorted_and_filtered(tmp_path):
    files = write_corpus(tmp_path)
    assert textdata.corpus_files(tmp_path) == sorted(files)


def test_load_corpus_splits_by_file_within_budget(tmp_path):
    files = write_corpus(tmp_path)
    ds = textdata.load_corpus(tmp_path, train_bytes=5000, val_bytes=600, test_bytes=600, block_size=16,
                              val_share=0.2, test_share=0.2)
    names = {k: set(v) for k, v in ds.files.items()}
    assert not names["train"] & names["val"] and not names["train"] & names["test"] and not names["val"] & names["test"]
    for split_name, used in names.items():
        assert all(textdata.split_of(f, 0.2, 0.2) == split_name for f in used)
    # the bytes are exactly the hash-ordered files joined by the separator, cut at the budget
    order = sorted((f for f in files if textdata.split_of(f, 0.2, 0.2) == "train"), key=textdata._hash)
    expected = b"".join(files[f] + textdata.SEPARATOR for f in order)[:5000]
    assert bytes(ds.train.data.tolist()) == expected
    assert ds.fingerprint["train_sha256"] == hashlib.sha256(expected).hexdigest()
    again = textdata.load_corpus(tmp_path, train_bytes=5000, val_bytes=600, test_bytes=600, block_size=16,
                                 val_share=0.2, test_share=0.2)
    assert again.fingerprint == ds.fingerprint  # deterministic


def test_windows_and_batches():
    split = textdata.TextSplit(torch.arange(50, dtype=torch.uint8), block_size=8)
    assert len(split) == 50 // 8 - 1
    x, y = split.tensors()
    assert torch.equal(x[1], torch.arange(8, 16)) and torch.equal(y[1], torch.arange(9, 17))
    seen = torch.cat([xb for xb, _ in split.batches(2, shuffle=True, seed=3)])
    assert seen.shape == (len(split), 8)
    offset = int(seen[:, 0].min()) % 8
    assert sorted(seen[:, 0].tolist()) == [offset + 8 * i for i in range(len(split))]  # every window once
    for xb, yb in split.batches(3, shuffle=True, seed=3):
        assert torch.equal(xb[:, 1:], yb[:, :-1]) and int(yb.max()) < 50
    assert split.num_batches(3) == -(-len(split) // 3)


def test_bad_inputs_raise(tmp_path):
    write_corpus(tmp_path, n_files=4)
    with pytest.raises(ValueError, match="block_size"):
        textdata.load_corpus(tmp_path, block_size=0)
    with pytest.raises(ValueError, match="fewer than 3 windows"):
        textdata.load_corpus(tmp_path, train_bytes=10, block_size=64)
    with pytest.raises(FileNotFoundError):
        textdata.load_corpus(tmp_path / "missing")
    with pytest.raises(ValueError, match="uint8"):
        textdata.TextSplit(torch.arange(10), 4)
    with pytest.raises(ValueError, match="unknown load_corpus option"):
        profiles.start("quick", textdata.CORPUS, 0, quick={"train_subset": 10})


def test_stdlib_corpus_is_found():
    files = textdata.corpus_files(textdata.stdlib_root())
    assert len(files) > 50 and "json/decoder.py" in files
    assert not any(f.startswith(("test/", "site-packages/")) for f in files)


def test_training_loop_trains_a_language_model(tmp_path):
    """The one loop, unchanged, learns a repeated text: loss over every position goes down."""
    write_corpus(tmp_path, n_files=30)
    ds = textdata.load_corpus(tmp_path, train_bytes=4000, val_bytes=500, test_bytes=500, block_size=16,
                              val_share=0.2, test_share=0.2)
    from compresslab.core.gpt import gpt

    torch.manual_seed(0)
    model = gpt(block_size=16, d_model=32, n_layer=1, n_head=2)
    before = evaluate(model, ds.test)
    assert before.n == len(ds.test) * 16  # one prediction per position
    hist = train(model, ds, TrainConfig(epochs=3, batch_size=16, lr=3e-3, optimizer="adam"), progress=False)
    after = evaluate(model, ds.test)
    assert after.loss < 0.6 * before.loss and len(hist.val_loss) == 3
