"""Huffman coding: optimal prefix codes from symbol counts, canonical codes, bit-exact encode/decode.

For counts c_s with probabilities p_s = c_s / sum(c), Huffman's construction (merge the two
lightest subtrees until one is left) gives code lengths l_s minimising the average length
L = sum_s p_s l_s over all prefix codes. It obeys the Shannon bounds H <= L < H + 1 with the
entropy H = -sum_s p_s log2 p_s. Only the lengths matter: a canonical code assigns the codewords
in order of (length, symbol), so a file stores the lengths alone and the codes follow.

Encoding and decoding are vectorised with NumPy. Encoding adds every codeword, shifted into
place, into 32-bit words. Decoding reads, for every bit position p, the next `max_length` bits
and looks them up in a table of 2^max_length entries (symbol, length), which gives the chain
p -> p + length(p); the codeword starts are the points of that chain from 0, found by pointer
doubling (a Python loop visits only every 8th codeword; nothing loops per bit).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "MAX_SUPPORTED_LENGTH",
    "huffman_lengths",
    "canonical_codes",
    "check_lengths",
    "entropy",
    "average_length",
    "HuffmanCode",
    "symbol_counts",
    "huffman_code",
    "codewords",
]

DEFAULT_MAX_LENGTH = 20  # decoding table: 2^20 entries; longer codes are length-limited (package-merge)
MAX_SUPPORTED_LENGTH = 24


def _as_counts(counts) -> np.ndarray:
    c = np.asarray(counts)
    if c.ndim != 1:
        raise ValueError(f"counts must be a 1-D array of non-negative integers, got shape {c.shape}")
    if c.size and (not np.issubdtype(c.dtype, np.number) or np.any(c < 0) or np.any(c != np.floor(c))):
        raise ValueError("counts must be non-negative integers")
    return c.astype(np.int64)


def huffman_lengths(counts, max_length: int | None = DEFAULT_MAX_LENGTH) -> np.ndarray:
    """Optimal code lengths (uint8, 0 for unused symbols) for symbol `counts`.

    Ties are broken deterministically: among equal weights, leaves come in symbol order and
    before merged nodes, merged nodes in the order they were made. With one used symbol its
    length is 0 (the decoder needs only the symbol count). If the optimal code is longer than
    `max_length`, the optimal code under that limit is built instead (package-merge).

    >>> huffman_lengths([5, 2, 1, 1])  # merges 1+1, then 2+2, then 4+5
    array([1, 2, 3, 3], dtype=uint8)
    >>> huffman_lengths([5, 2, 1, 1], max_length=2)  # the best code with no word over 2 bits
    array([2, 2, 2, 2], dtype=uint8)
    """
    c = _as_counts(counts)
    if max_length is not None and not 1 <= max_length <= MAX_SUPPORTED_LENGTH:
        raise ValueError(f"max_length={max_length} must be in [1, {MAX_SUPPORTED_LENGTH}] or None")
    lengths = np.zeros(len(c), dtype=np.int64)
    used = np.flatnonzero(c)
    if len(used) <= 1:
        return lengths.astype(np.uint8)
    if max_length is not None and len(used) > 2 ** max_length:
        raise ValueError(f"{len(used)} used symbols cannot have codes of at most max_length={max_length} bits")
    n = len(c)
    heap = [(int(c[s]), int(s)) for s in used]
    heapq.heapify(heap)
    parent: dict[int, int] = {}
    next_id = n
    while len(heap) > 1:
        wa, a = heapq.heappop(heap)
        wb, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (wa + wb, next_id))
        next_id += 1
    depth = {next_id - 1: 0}
    for node in range(next_id - 2, n - 1, -1):  # internal nodes, newest (closest to root) first
        depth[node] = depth[parent[node]] + 1
    for s in used:
        lengths[s] = depth[parent[int(s)]] + 1
    if max_length is not None and lengths.max() > max_length:
        lengths[used] = _package_merge(c[used], max_length)
    return lengths.astype(np.uint8)


def _package_merge(weights: np.ndarray, limit: int) -> np.ndarray:
    """Optimal lengths <= `limit` for positive `weights` (Larmore & Hirschberg's package-merge)."""
    n = len(weights)
    order = np.argsort(weights, kind="stable")
    leaf_w = weights[order]
    cur_w, levels = leaf_w, [(np.zeros(n, bool), np.arange(n))]
    for _ in range(limit - 1):
        m = len(cur_w) // 2
        pkg_w = cur_w[0:2 * m:2] + cur_w[1:2 * m:2]
        all_w = np.concatenate([leaf_w, pkg_w])
        kind = np.concatenate([np.zeros(n, bool), np.ones(m, bool)])
        ref = np.concatenate([np.arange(n), np.arange(m)])
        merge = np.argsort(all_w, kind="stable")
        cur_w = all_w[merge]
        levels.append((kind[merge], ref[merge]))
    selected = np.zeros(len(cur_w), bool)
    selected[:2 * n - 2] = True
    sorted_lengths = np.zeros(n, np.int64)
    for level in range(len(levels) - 1, -1, -1):
        kind, ref = levels[level]
        np.add.at(sorted_lengths, ref[selected & ~kind], 1)
        if level:
            packages = ref[selected & kind]  # package j of this level = items 2j, 2j+1 of the one below
            selected = np.zeros(len(levels[level - 1][0]), bool)
            selected[2 * packages] = True
            selected[2 * packages + 1] = True
    lengths = np.empty(n, np.int64)
    lengths[order] = sorted_lengths
    return lengths


def canonical_codes(lengths) -> np.ndarray:
    """Canonical codewords (uint64) for `lengths`: symbols sorted by (length, symbol) get
    consecutive codes, shifted left when the length grows. Unused symbols (length 0) get 0.

    >>> [format(int(c), f"0{n}b") for c, n in zip(canonical_codes([1, 2, 3, 3]), [1, 2, 3, 3])]
    ['0', '10', '110', '111']
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    check_lengths(lengths)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        return codes
    order = used[np.lexsort((used, lengths[used]))]
    code, prev = 0, int(lengths[order[0]])
    for i, s in enumerate(order):
        length = int(lengths[s])
        if i:
            code = (code + 1) << (length - prev)
        codes[s] = code
        prev = length
    return codes


def check_lengths(lengths) -> None:
    """Raise ValueError unless `lengths` can be the lengths of a prefix code (Kraft: sum 2^-l <= 1)."""
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or (lengths.size and (lengths.min() < 0 or lengths.max() > MAX_SUPPORTED_LENGTH)):
        raise ValueError(f"code lengths must be a 1-D array of integers in [0, {MAX_SUPPORTED_LENGTH}]")
    used = lengths[lengths > 0].astype(np.int64)
    if used.size and np.sum(np.ldexp(1.0, -used)) > 1.0:
        raise ValueError("code lengths violate the Kraft inequality sum(2^-l) <= 1: not a prefix code")


def entropy(counts) -> float:
    """Shannon entropy H = -sum p log2 p in bits per symbol (0 for an empty or one-symbol source).

    >>> entropy([1, 1, 1, 1]), round(entropy([5, 2, 1, 1]), 4)
    (2.0, 1.6577)
    """
    c = _as_counts(counts)
    total = c.sum()
    if total == 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * np.log2(p)).sum())


def average_length(lengths, counts) -> float:
    """L = sum p_s l_s, the mean codeword length in bits per symbol under `counts`.

    >>> round(average_length([1, 2, 3, 3], [5, 2, 1, 1]), 4)  # (5*1 + 2*2 + 1*3 + 1*3) / 9; H <= L < H + 1
    1.6667
    """
    c = _as_counts(counts)
    total = c.sum()
    return float((np.asarray(lengths, np.int64) * c).sum() / total) if total else 0.0


@dataclass(frozen=True, eq=False)
class HuffmanCode:
    """A canonical prefix code over symbols 0..n-1, given by its code lengths (0 = no codeword).

    `single` marks the degenerate code of a one-symbol source: every length is 0 and the message
    is that symbol n times, so it takes no bits. `encode(symbols) -> bytes` packs codewords MSB
    first and pads the last byte with zeros; `decode(data, n)` needs the symbol count n.
    """

    lengths: np.ndarray
    single: int | None = None

    def __post_init__(self) -> None:
        lengths = np.asarray(self.lengths, dtype=np.int64)
        check_lengths(lengths)
        if self.single is not None:
            if not 0 <= self.single < len(lengths) or lengths.any():
                raise ValueError(f"single={self.single} needs all code lengths 0 and a symbol in [0, {len(lengths)})")
        object.__setattr__(self, "lengths", lengths.astype(np.uint8))
        object.__setattr__(self, "codes", canonical_codes(lengths))

    @classmethod
    def from_counts(cls, counts, max_length: int | None = DEFAULT_MAX_LENGTH) -> HuffmanCode:
        """The canonical Huffman code for `counts` (see `huffman_lengths`)."""
        lengths = huffman_lengths(counts, max_length)
        used = np.flatnonzero(_as_counts(counts))
        return cls(lengths, int(used[0]) if len(used) == 1 else None)

    @classmethod
    def from_symbols(cls, symbols, alphabet_size: int, max_length: int | None = DEFAULT_MAX_LENGTH) -> HuffmanCode:
        return cls.from_counts(symbol_counts(symbols, alphabet_size), max_length)

    @property
    def alphabet_size(self) -> int:
        return len(self.lengths)

    @property
    def max_length(self) -> int:
        return int(self.lengths.max()) if len(self.lengths) else 0

    def table(self):
        """The code table of the used symbols: symbol, length, codeword."""
        import pandas as pd

        rows = [{"symbol": s, "length": int(ln), "code": format(int(self.codes[s]), f"0{int(ln)}b")}
                for s, ln in enumerate(self.lengths) if ln]
        if self.single is not None:
            rows = [{"symbol": self.single, "length": 0, "code": ""}]
        return pd.DataFrame(rows)

    def bit_length(self, symbols) -> int:
        """Total bits of encoding `symbols` (before padding to whole bytes)."""
        s = self._check_symbols(symbols)
        return int(self.lengths[s].astype(np.int64).sum())

    def _check_symbols(self, symbols) -> np.ndarray:
        s = np.asarray(symbols).reshape(-1)
        if s.size == 0:
            return s.astype(np.int64)
        if not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"symbols must be integers, got dtype {s.dtype}")
        if s.min() < 0 or s.max() >= self.alphabet_size:
            raise ValueError(f"symbols must be in [0, {self.alphabet_size}), got [{s.min()}, {s.max()}]")
        s = s.astype(np.int64)
        if self.single is not None:
            if np.any(s != self.single):
                raise ValueError(f"this one-symbol code only encodes symbol {self.single}")
        elif np.any(self.lengths[s] == 0):
            bad = int(s[self.lengths[s] == 0][0])
            raise ValueError(f"symbol {bad} has no codeword (its count was 0 when the code was built)")
        return s

    def encode(self, symbols) -> bytes:
        """Concatenated codewords of `symbols`, MSB first, zero-padded to a whole byte."""
        s = self._check_symbols(symbols)
        if s.size == 0 or self.single is not None:
            return b""
        lens = self.lengths[s].astype(np.int64)
        ends = np.cumsum(lens)
        total = int(ends[-1])
        starts = ends - lens
        # each codeword goes, left-aligned at its bit offset, into a 64-bit window over the 32-bit
        # words `word` and `word + 1`; the bit fields never overlap, so adding the halves (exactly,
        # in float64 below 2^53) into their words is the same as OR-ing them in
        word = starts >> 5
        placed = self.codes[s] << (64 - (starts & 31) - lens).astype(np.uint64)
        n_words = word[-1] + 2
        words = np.bincount(word, weights=(placed >> np.uint64(32)).astype(np.float64), minlength=n_words)
        words += np.bincount(word + 1, weights=(placed & np.uint64(0xFFFFFFFF)).astype(np.float64),
                             minlength=n_words)
        return words.astype(">u4").tobytes()[: (total + 7) // 8]

    def decode(self, data: bytes, n: int) -> np.ndarray:
        """The first `n` symbols (int64) coded in `data`; ValueError if `data` cannot hold them."""
        if n < 0:
            raise ValueError(f"n={n} must be >= 0")
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if self.single is not None:
            return np.full(n, self.single, dtype=np.int64)
        if self.max_length == 0:
            raise ValueError(f"cannot decode {n} symbols with an empty code")
        nbits = 8 * len(data)
        if nbits == 0:
            raise ValueError(f"no data to decode {n} symbols from")
        lut_sym, lut_len = self._decode_table()
        lmax = self.max_length
        raw = np.frombuffer(bytes(data), dtype=np.uint8)
        padded = np.concatenate([raw, np.zeros(4, np.uint8)])
        # w32[b]: the 32 bits from byte b on; the window at bit 8b + o is its top lmax bits after
        # shifting out o bits (lmax + 7 <= 32): one (bytes x 8) array of every window, no bit loop
        w32 = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(padded, 4)[: len(raw)])
        w32 = w32.view(">u4").ravel().astype(np.uint32)
        shifts = np.arange(8, dtype=np.uint32)
        window = ((w32[:, None] << shifts) >> np.uint32(32 - lmax)).ravel().astype(np.intp)
        step = lut_len[window]
        # nxt[p]: where the next codeword starts if one starts at p; a pattern that starts no
        # codeword, or one running past the data, goes to the sink nbits + 1
        sink = nbits + 1
        nxt = np.arange(nbits + 2, dtype=np.int32)
        nxt[:nbits] += step
        nxt[:nbits][(step == 0) | (nxt[:nbits] > nbits)] = sink
        nxt[nbits:] = sink
        starts = _chain(nxt, n)
        if starts[-1] >= nbits or nxt[starts[-1]] == sink:
            raise ValueError(f"data ends (or holds an invalid codeword) before {n} symbols were decoded")
        return lut_sym[window[starts]].astype(np.int64)

    def _decode_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Tables of 2^max_length entries: the symbol and length of the codeword that the next
        max_length bits start with (length 0: no codeword starts that way)."""
        lmax = self.max_length
        used = np.flatnonzero(self.lengths)
        lens = self.lengths[used].astype(np.int64)
        first = self.codes[used].astype(np.int64) << (lmax - lens)
        span = np.int64(1) << (lmax - lens)
        lut_sym = np.zeros(1 << lmax, dtype=np.int32)
        lut_len = np.zeros(1 << lmax, dtype=np.uint8)
        idx = np.repeat(first, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
        lut_sym[idx] = np.repeat(used, span)
        lut_len[idx] = np.repeat(lens, span)
        return lut_sym, lut_len


def _chain(nxt: np.ndarray, n: int, jump_log2: int = 3) -> np.ndarray:
    """The first n points 0, nxt[0], nxt[nxt[0]], ... of the chain, vectorised.

    Pointer doubling gives J = nxt composed 2^k times; a short loop follows J from 0 to find every
    2^k-th point (the anchors); then 2^k - 1 vectorised steps of nxt fill in the points between.
    """
    k = min(jump_log2, max(0, int(np.log2(max(n, 1))) // 2))
    block = 1 << k
    jump = nxt
    for _ in range(k):
        jump = jump[jump]
    n_anchors = -(-n // block)
    anchors = np.empty(n_anchors, dtype=np.int64)
    p = 0
    item = jump.item
    for j in range(n_anchors):  # n / 2^k Python steps
        anchors[j] = p
        p = item(p)
    points = np.empty((block, n_anchors), dtype=np.int64)
    points[0] = anchors
    for r in range(1, block):
        points[r] = nxt[points[r - 1]]
    return points.T.reshape(-1)[:n]


def symbol_counts(symbols, alphabet_size: int) -> np.ndarray:
    """Occurrences of each symbol 0..alphabet_size-1 in `symbols`."""
    s = np.asarray(symbols).reshape(-1)
    if s.size and (s.min() < 0 or s.max() >= alphabet_size):
        raise ValueError(f"symbols must be in [0, {alphabet_size}), got [{s.min()}, {s.max()}]")
    return np.bincount(s.astype(np.int64), minlength=alphabet_size)


def huffman_code(counts, max_length: int | None = DEFAULT_MAX_LENGTH) -> HuffmanCode:
    """The canonical Huffman code for symbol `counts` (see `huffman_lengths`).

    >>> code = huffman_code([5, 2, 1, 1])
    >>> data = code.encode([0, 0, 1, 3, 2, 0])  # 0 0 10 111 110 0, padded with zeros to 2 bytes
    >>> data.hex(), code.decode(data, 6).tolist()
    ('2f80', [0, 0, 1, 3, 2, 0])
    """
    return HuffmanCode.from_counts(counts, max_length)


def codewords(counts) -> dict[int, str]:
    """Each used symbol's canonical Huffman codeword as a string of bits, unlimited length (a single
    used symbol gets "0").

    >>> codewords([5, 2, 1, 1])
    {0: '0', 1: '10', 2: '110', 3: '111'}
    """
    arr = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(arr)
    if len(used) == 1:
        return {int(used[0]): "0"}
    lengths = huffman_lengths(arr, max_length=None)
    codes = canonical_codes(lengths)
    return {int(s): format(int(codes[s]), f"0{int(lengths[s])}b") for s in used}
