"""Time Huffman encode + decode of 1e6 symbols: compresslab (NumPy) vs dahuffman (pure Python).

Both coders get the same code lengths: dahuffman builds its code from the counts (plus its own
end-of-file symbol); compresslab builds the canonical code from dahuffman's lengths, EOF included
as one more symbol. The script checks that both streams have the same total bit length and, since
dahuffman accepts a code table, that dahuffman encoding with the canonical codewords produces the
same bytes (all but the last, where dahuffman pads with the start of its EOF codeword).

    python benchmarks/bench_huffman.py [--n 1000000] [--alphabet 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from dahuffman import HuffmanCodec
from dahuffman.huffmancodec import _EOF, PrefixCodec

from compresslab.techniques.huffman import HuffmanCode, entropy


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--alphabet", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    k = args.alphabet
    symbols = rng.choice(k, size=args.n, p=rng.dirichlet(np.full(k, 0.5)))
    counts = np.bincount(symbols, minlength=k)
    symbol_list = symbols.tolist()

    # dahuffman's own Huffman code (it adds an EOF symbol of count 1)
    theirs = HuffmanCodec.from_frequencies({s: int(c) for s, c in enumerate(counts) if c})
    table = theirs.get_code_table()
    lengths = np.zeros(k + 1, dtype=np.int64)  # symbol k stands for dahuffman's EOF
    for sym, (bits, _) in table.items():
        lengths[k if sym == _EOF else sym] = bits
    ours = HuffmanCode(lengths)

    t_enc, data = best_of(lambda: ours.encode(symbols), args.repeats)
    t_dec, back = best_of(lambda: ours.decode(data, args.n), args.repeats)
    assert np.array_equal(back, symbols), "compresslab round trip failed"
    t_enc_d, data_d = best_of(lambda: theirs.encode(symbol_list), 1)
    t_dec_d, back_d = best_of(lambda: theirs.decode(data_d), 1)
    assert back_d == symbol_list, "dahuffman round trip failed"

    our_bits = ours.bit_length(symbols)
    their_bits = sum(table[s][0] for s in symbol_list)
    assert our_bits == their_bits, (our_bits, their_bits)
    assert len(data) == len(data_d) == -(-our_bits // 8), (len(data), len(data_d))
    # the same codewords through dahuffman's encoder give the same bytes
    same_codes = PrefixCodec({(s if s < k else _EOF): (int(lengths[s]), int(ours.codes[s]))
                              for s in range(k + 1) if lengths[s]}, concat=list, check=False)
    data_same = same_codes.encode(symbol_list)
    assert data_same[:-1] == data[:-1] and len(data_same) == len(data), "bit streams differ"

    h = entropy(counts)
    print(f"{args.n:,} symbols, alphabet {k}: entropy {h:.4f} bits, average code length "
          f"{our_bits / args.n:.4f} bits, {len(data):,} bytes (equal bit length in both: {our_bits:,} bits)")
    print(f"{'':12}{'encode s':>10}{'decode s':>10}{'total s':>10}")
    print(f"{'compresslab':12}{t_enc:10.3f}{t_dec:10.3f}{t_enc + t_dec:10.3f}")
    print(f"{'dahuffman':12}{t_enc_d:10.3f}{t_dec_d:10.3f}{t_enc_d + t_dec_d:10.3f}")
    print(f"speed-up: encode {t_enc_d / t_enc:.0f}x, decode {t_dec_d / t_dec:.0f}x, "
          f"total {(t_enc_d + t_dec_d) / (t_enc + t_dec):.0f}x")


if __name__ == "__main__":
    main()
