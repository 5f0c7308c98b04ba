"""Envelope batches on the wire: compressed bytes over JSON bytes, by batch size.

    .venv/bin/python bench/compression.py [--seeds 1,2,3]

On the realistic corpus (``bench/corpus.py``), for batches of 1, 2, 5, 20
and 200 envelopes built as the uplink builds them, the codec's frames
(header bytes included): zlib 6 (codec 1), plain zstd at 9 and 19 (codec 2),
what the gateway sends to a central that reads codec 3 (the smaller of
plain zstd and zstd with the frozen dictionary, for batches up to 16 KiB of
JSON), and for comparison zstd with a 16 KiB dictionary trained on 400
envelopes of another seed (the same generator: an upper bound, since the
corpus's prose comes from a bank of templates such a dictionary learns).
Deterministic per seed; the spread is over seeds. Time per batch is the
median of zstd 19 with the codec-3 choice (both compressions) on this
machine, to show the CPU cost.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.corpus import batch_json, envelopes  # noqa: E402
from outpost.wire.codec import CODEC_DICT, CODEC_ZSTD, encode_for_peer  # noqa: E402

SIZES = (1, 2, 5, 20, 200)
BATCHES = 100  # per size and seed


def ratios(seed: int) -> dict[int, dict[str, float]]:
    corpus = envelopes(max(SIZES) * 20, seed=seed)
    trained = zstandard.train_dictionary(
        16384, [e.model_dump_json().encode() for e in envelopes(400, seed=seed + 1000)]
    )
    out: dict[int, dict[str, float]] = {}
    for n in SIZES:
        groups = [corpus[(i * n) % len(corpus) :][:n] for i in range(BATCHES)]
        docs = [batch_json("gw-0001", g) for g in groups if len(g) == n]
        total = sum(map(len, docs))
        row: dict[str, float] = {}
        row["zlib 6"] = sum(len(zlib.compress(d, 6)) + 2 for d in docs) / total
        row["zstd 9"] = sum(len(encode_for_peer(d, CODEC_ZSTD, 9)) for d in docs) / total
        row["zstd 19"] = sum(len(encode_for_peer(d, CODEC_ZSTD, 19)) for d in docs) / total
        row["codec 3, 9"] = sum(len(encode_for_peer(d, CODEC_DICT, 9)) for d in docs) / total
        t0 = time.perf_counter()
        row["codec 3, 19"] = sum(len(encode_for_peer(d, CODEC_DICT, 19)) for d in docs) / total
        row["ms"] = (time.perf_counter() - t0) / len(docs) * 1000
        tz = zstandard.ZstdCompressor(level=19, dict_data=trained, write_dict_id=False)
        row["trained dict, 19"] = sum(len(tz.compress(d)) + 2 for d in docs) / total
        row["json"] = total / len(docs)
        out[n] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = [ratios(s) for s in seeds]
    cols = ["zlib 6", "zstd 9", "zstd 19", "codec 3, 9", "codec 3, 19", "trained dict, 19"]
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        "| envelopes per batch | JSON bytes | "
        + " | ".join(cols)
        + " | ms per batch (codec 3, 19) |"
    )
    print("| ---: | ---: | " + " | ".join("---:" for _ in cols) + " | ---: |")
    for n in SIZES:
        cells = []
        for c in [*cols, "ms"]:
            vals = [r[n][c] for r in per_seed]
            fmt = "{:.1f}" if c == "ms" else "{:.3f}"
            if len(vals) > 1:
                cells.append(
                    f"{fmt.format(statistics.median(vals))} "
                    f"({fmt.format(min(vals))}-{fmt.format(max(vals))})"
                )
            else:
                cells.append(fmt.format(vals[0]))
        json_bytes = statistics.median(r[n]["json"] for r in per_seed)
        print(f"| {n} | {json_bytes:,.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
