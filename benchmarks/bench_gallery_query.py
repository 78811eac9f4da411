"""The gallery's query layer over a million rows: the time of one SQL query and of all the
canned analyses (``amlab gallery stats``) on a generated metadata.parquet of the gallery's
full schema (DiffusionDB's 13 columns, nulls in user_name and the NSFW columns, and ours).

The table is generated (random settings, prompts drawn from a pool of captions), written to a
temporary directory and read back by DuckDB; the times include reading the parquet.

    python benchmarks/bench_gallery_query.py [--json] [--rows N] [--repeats N]
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from common import best_time, parse_options

from amlab.analysis.memorisation import AUDIT_CLASSES
from amlab.data.attributes import ATTRIBUTES
from amlab.data.captions import WORDS
from amlab.tasks.gallery import GALLERY_SCHEMA
from amlab.tasks.gallery_query import query, stats

QUERY = (
    "SELECT cfg, sampler, count(*) AS n, avg(class_match::INTEGER) AS class, "
    "avg(nearest_distance) AS distance FROM metadata WHERE step >= 20 GROUP BY cfg, sampler "
    "ORDER BY cfg, sampler"
)


def generated_table(rows: int, seed: int = 0) -> pa.Table:
    """``rows`` rows of the gallery schema with random values (numpy, vectorised)."""
    g = np.random.default_rng(seed)
    pool = np.array(
        [
            " ".join(w for w in ("a", *choice, str(d)) if w)
            for d in range(10)
            for choice in np.array(
                [[g.choice(["", *WORDS[n]]) for n in ATTRIBUTES] for _ in range(500)]
            )
        ]
    )
    prompts = pool[g.integers(0, len(pool), rows)]
    null_f32 = pa.nulls(rows, pa.float32())
    stamp = datetime(2026, 1, 1, tzinfo=timezone.utc)
    columns = {
        "image_name": pa.array([f"{i:032x}.png" for i in range(rows)]),
        "prompt": pa.array(prompts),
        "part_id": (np.arange(rows) // 1000 + 1).astype(np.uint16),  # counted before narrowing
        "seed": g.integers(0, 2**32, rows, dtype=np.uint32),
        "step": g.choice(np.array([20, 30, 50], dtype=np.uint16), rows),
        "cfg": g.choice(np.array([1, 2, 3, 7], dtype=np.float32), rows),
        "sampler": g.choice(np.array([3, 5, 9], dtype=np.uint8), rows),
        "width": np.full(rows, 8, dtype=np.uint16),
        "height": np.full(rows, 8, dtype=np.uint16),
        "user_name": pa.nulls(rows, pa.string()),
        "timestamp": pa.array([stamp] * rows, pa.timestamp("us", tz="UTC")),
        "image_nsfw": null_f32,
        "prompt_nsfw": null_f32,
        "model_hash": pa.array(["0c52dd905f80fb3f"] * rows),
        "training_images": np.full(rows, 1797, dtype=np.uint32),
        "final_energy": g.random(rows, dtype=np.float32),
        "nearest_train": g.integers(0, 1797, rows, dtype=np.uint32),
        "nearest_distance": g.random(rows, dtype=np.float32),
        "class": g.integers(0, 10, rows, dtype=np.uint8),
        **{n: g.random(rows, dtype=np.float32) for n in ATTRIBUTES},
        "class_match": g.random(rows) < 0.9,
        **{f"{n}_match": g.random(rows) < 0.8 for n in ATTRIBUTES},
        "audit": pa.array(np.array(AUDIT_CLASSES)[g.integers(0, 3, rows)]),
    }
    return pa.table(columns, schema=GALLERY_SCHEMA)


def main() -> None:
    options = parse_options(__doc__, rows=1_000_000, repeats=3)
    started = time.perf_counter()
    table = generated_table(options.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metadata.parquet"
        pq.write_table(table, path)
        made = time.perf_counter() - started
        query_s = best_time(lambda: query(path, QUERY), options.repeats)
        stats_s = best_time(lambda: stats(path), options.repeats)
        size = path.stat().st_size
    result = {
        "rows": options.rows,
        "parquet_bytes": size,
        "generate_and_write_seconds": made,
        "query_seconds": query_s,
        "stats_seconds": stats_s,
        "query": QUERY,
    }
    if options.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{options.rows:,} rows ({size / 1e6:.1f} MB parquet): one GROUP BY query "
            f"{query_s:.3f} s, all canned analyses (stats) {stats_s:.3f} s (best of "
            f"{options.repeats}; table made and written in {made:.1f} s)"
        )


if __name__ == "__main__":
    main()
