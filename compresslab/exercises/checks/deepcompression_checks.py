"""Exercise checks for notebook 06 Deep Compression."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch

from compresslab.exercises.checking import (
    as_tensor,
    call,
    compare,
    exercise_check,
    fail,
    require_unchanged,
    seeded_generator,
)
from compresslab.techniques import filelayers, huffman, sharing

__all__ = [
    "check_init_centroids",
    "check_huffman_code",
    "check_relative_encode",
]

# ----------------------------------------------------------------- 06 Deep Compression

@exercise_check("init_centroids")
def check_init_centroids(fn: Callable) -> int:
    """init_centroids(w, k, method) -> k sorted centroids ('linear' or 'density')."""
    name = "init_centroids"
    g = seeded_generator(15)
    w_rand = torch.randn(500, generator=g) * 0.1
    cases = [("w=[-1, 0.2, 0.5, 3], k=5, 'linear'", torch.tensor([-1.0, 0.2, 0.5, 3.0]), 5, "linear"),
             ("w=[0, 1, ..., 9], k=2, 'density'", torch.arange(10.0), 2, "density"),
             ("w=[0, 1, ..., 9], k=4, 'density'", torch.arange(10.0), 4, "density"),
             ("500 random weights, k=16, 'linear'", w_rand, 16, "linear"),
             ("500 random weights, k=16, 'density'", w_rand, 16, "density"),
             ("a (20, 10) weight matrix, k=8, 'density'", torch.randn(20, 10, generator=g), 8, "density")]
    for case, w, k, method in cases:
        before = w.clone()
        got = call(name, fn, case, w, k, method)
        require_unchanged(name, case, before, w)
        expected = sharing.init_centroids(before, k, method)
        flat = before.reshape(-1).double()
        lin_sym = torch.linspace(-float(flat.abs().max()), float(flat.abs().max()), k)
        mistakes = {
            "linear init spaces the k centroids evenly between min(w) and max(w) (torch.linspace(w.min(), w.max(), k))":
                lin_sym if method == "linear" else None,
            "density init takes the quantiles at (i + 1/2) / k for i = 0..k-1 (the middle of k equal-probability "
            "slices), not at i / (k - 1)": torch.quantile(flat, torch.linspace(0, 1, k, dtype=torch.float64)) if method == "density" else None,
            "the centroids must be sorted ascending": expected.flip(0),
        }
        compare(name, case, got, expected,
                 "linear: k evenly spaced values from the smallest to the largest weight; density: the quantiles at the k mid-points (i + 1/2) / k",
                 mistakes, atol=1e-6, rtol=1e-5)
    return len(cases)


def _huffman_problem(code: object, counts: np.ndarray) -> tuple[str, str] | None:
    """(problem, hint) if `code` is not an optimal prefix code for `counts`, else None."""
    used = [int(s) for s in np.flatnonzero(counts)]
    if not isinstance(code, Mapping):
        return (f"the result is a {type(code).__name__}, not a dict", "return {symbol: codeword string of '0'/'1'}")
    keys = set(code)
    if keys != set(used):
        missing, extra = sorted(set(used) - keys), sorted(keys - set(used))
        return (f"symbols with a codeword {sorted(keys)[:12]} != the used symbols {used[:12]} "
                f"(missing {missing[:8]}, unexpected {extra[:8]})",
                "give a codeword to every symbol with a count > 0, and only to those")
    for s, word in code.items():
        if not isinstance(word, str) or not word or set(word) - {"0", "1"}:
            return (f"the codeword of symbol {s} is {word!r}", "codewords are non-empty strings of '0' and '1'")
    if len(used) == 1:
        return None if len(code[used[0]]) == 1 else (f"one used symbol got {code[used[0]]!r}", "a one-symbol source gets the code '0'")
    words = sorted((w, s) for s, w in code.items())
    for (w1, s1), (w2, s2) in zip(words[:-1], words[1:]):
        if w2.startswith(w1):
            return (f"not a prefix code: {w1!r} (symbol {s1}) is a prefix of {w2!r} (symbol {s2})",
                    "read codewords off a binary tree: symbols are leaves, and the path to a leaf (0 = left, "
                    "1 = right) is its codeword; then no codeword can start another")
    bits = sum(int(counts[s]) * len(w) for s, w in code.items())
    optimal = int((huffman.huffman_lengths(counts, max_length=None).astype(np.int64) * counts).sum())
    if bits != optimal:
        return (f"the code is prefix-free but not optimal: {bits} bits in total, Huffman needs {optimal}",
                "repeatedly merge the two LIGHTEST subtrees (heapq with (count, tiebreak, node)); every merge adds "
                "one bit to all symbols below it")
    return None


@exercise_check("huffman_code")
def check_huffman_code(fn: Callable) -> int:
    """huffman_code(counts) -> {symbol: codeword '0'/'1' string}: an optimal prefix code."""
    name = "huffman_code"
    rng = np.random.default_rng(16)
    cases = [("counts=[5, 2, 1, 1]", [5, 2, 1, 1]), ("counts=[0, 10, 0, 3, 3] (symbols 0 and 2 unused)", [0, 10, 0, 3, 3]),
             ("counts=[1, 1]", [1, 1]), ("8 equally frequent symbols", [4] * 8), ("one used symbol: [0, 7, 0]", [0, 7, 0]),
             ("16 symbols with geometric counts", [int(1000 * 0.6 ** i) + 1 for i in range(16)]),
             ("256 symbols, random counts with zeros", [int(c) for c in rng.integers(0, 50, 256) * (rng.random(256) < 0.7)])]
    for case, counts in cases:
        arr = np.asarray(counts, dtype=np.int64)
        got = call(name, fn, case, list(counts))
        problem = _huffman_problem(got, arr)
        if problem is not None:
            lengths = huffman.huffman_lengths(arr, max_length=None)
            expected = {int(s): int(lengths[s]) for s in np.flatnonzero(arr)}
            raise fail(name, case, problem[0], f"an optimal prefix code, codeword lengths {expected}" if len(expected) <= 16 else
                        f"an optimal prefix code ({int((lengths.astype(np.int64) * arr).sum())} bits in total)",
                        got if not isinstance(got, Mapping) or len(got) <= 16 else f"a dict of {len(got)} codewords",
                        problem[1])
    return len(cases)


@exercise_check("relative_encode")
def check_relative_encode(fn: Callable) -> int:
    """relative_encode(positions, index_bits) -> gap symbols with filler zeros (Deep Compression)."""
    name = "relative_encode"
    rng = np.random.default_rng(17)
    cases = [("positions=[1, 4, 5, 12], index_bits=2 (gaps 2, 3, 1, 7; the largest gap is 3)", [1, 4, 5, 12], 2),
             ("positions=[0, 3, 7, 13], index_bits=2 (gaps 1, 3, 4, 6)", [0, 3, 7, 13], 2),
             ("no non-zeros: positions=[]", [], 3),
             ("200 random positions among 5000, index_bits=3", np.sort(rng.choice(5000, 200, replace=False)), 3),
             ("500 random positions among 20000, index_bits=5", np.sort(rng.choice(20000, 500, replace=False)), 5)]
    for case, positions, bits in cases:
        got = call(name, fn, case, np.asarray(positions, dtype=np.int64), bits)
        expected = filelayers.relative_encode(positions, bits)
        pos = np.asarray(positions, dtype=np.int64)
        m = (1 << bits) - 1
        gaps = np.diff(pos, prepend=-1) if pos.size else pos
        mistakes = {
            "the first gap counts from position -1 (so position 0 has gap 1): gaps = diff(positions, prepend=-1)":
                filelayers.relative_encode(pos - 1, bits) if pos.size and pos[0] > 0 else None,
            f"a gap larger than {m} = 2^index_bits - 1 does not fit: emit q = (gap - 1) // {m} filler zeros first, "
            f"then gap - q * {m}": gaps if pos.size else None,
            "with q = gap // M a gap of exactly M would become a filler followed by 0: use q = (gap - 1) // M":
                _relative_floor(gaps, m) if pos.size else None,
        }
        got_t = as_tensor(got)
        if got_t is None or got_t.dim() != 1:
            raise fail(name, case, "the result must be a 1-D sequence of integers", expected, got,
                        "return a list / array / tensor of symbols")
        compare(name, case, got_t, torch.from_numpy(expected),
                 "gap = diff(positions, prepend=-1); each gap g becomes (g - 1) // M zeros followed by g - M * ((g - 1) // M)",
                 mistakes, atol=0, rtol=0)
    return len(cases)


def _relative_floor(gaps: np.ndarray, m: int) -> np.ndarray:
    out: list[int] = []
    for g in gaps.tolist():
        out += [0] * (g // m) + [g - m * (g // m)]
    return np.asarray(out)
