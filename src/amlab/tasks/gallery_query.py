"""The gallery's query layer: DuckDB over a ``metadata.parquet``, ours or DiffusionDB's.

:func:`query` runs SQL against the table, which the SQL calls ``metadata``; :func:`stats`
runs the canned analyses (prompt length and word counts, top phrases, duplicate prompts, the
seed / guidance / steps / sampler distributions, nulls per column, and for our galleries the
adherence per attribute and guidance scale and the audit's classes). The file is given by
path and read where it lies; nothing is downloaded. Before any query the file's schema is
checked against DiffusionDB's 13 columns (:data:`~amlab.tasks.gallery.DIFFUSIONDB_SCHEMA`):
a file that is no parquet, or lacks a column, or holds one of another kind, is refused with
a message naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from amlab.errors import AmlabError
from amlab.tasks.gallery import AMLAB_SCHEMA, DIFFUSIONDB_SCHEMA, SAMPLER_CODES
from amlab.tasks.prompts import JUDGED

#: rows a canned list (top phrases, duplicates, distributions) shows at most
TOP = 10


def _kind(t: pa.DataType) -> str:
    """The kind of a column's type that the checks compare: integer, float, string, ..."""
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_boolean(t):
        return "boolean"
    return str(t)


def metadata_file(path: str | Path) -> Path:
    """The parquet file ``path`` names (a directory: its ``metadata.parquet``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metadata.parquet"
    if not path.is_file():
        raise AmlabError(
            f"{path} does not exist; pass a metadata.parquet (DiffusionDB's or a gallery's) or "
            "the directory holding it."
        )
    return path


def check_schema(path: str | Path) -> pa.Schema:
    """The schema of the parquet file ``path`` after checking it holds DiffusionDB's 13
    columns, each of its kind (integer widths and timestamp units may differ); an AmlabError
    names what is wrong."""
    path = metadata_file(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise AmlabError(f"{path} is not a readable parquet file ({exc}).") from None
    missing = [f.name for f in DIFFUSIONDB_SCHEMA if f.name not in schema.names]
    if missing:
        raise AmlabError(
            f"{path} lacks DiffusionDB's column(s) {', '.join(missing)}; a metadata table needs "
            f"all 13: {', '.join(DIFFUSIONDB_SCHEMA.names)}."
        )
    wrong = [
        f"{f.name} is {schema.field(f.name).type}, not {_kind(f.type)}"
        for f in DIFFUSIONDB_SCHEMA
        if _kind(schema.field(f.name).type) != _kind(f.type)
    ]
    if wrong:
        raise AmlabError(f"{path}: {'; '.join(wrong)}.")
    return schema


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    escaped = str(path).replace("'", "''")
    con.execute(f"CREATE VIEW metadata AS SELECT * FROM read_parquet('{escaped}')")
    return con


def query(path: str | Path, sql: str) -> dict[str, Any]:
    """Run ``sql`` over the metadata table (named ``metadata``). Returns ``columns`` and
    ``rows`` (lists of values)."""
    path = metadata_file(path)
    check_schema(path)
    con = _connect(path)
    try:
        cursor = con.execute(sql)
        rows = cursor.fetchall()
    except duckdb.Error as exc:
        raise AmlabError(f"the query failed: {exc}".strip()) from None
    columns = [d[0] for d in cursor.description] if cursor.description else []
    return {"columns": columns, "rows": [list(r) for r in rows]}


def _records(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def stats(path: str | Path) -> dict[str, Any]:
    """The canned analyses of the metadata table (module docstring)."""
    path = metadata_file(path)
    schema = check_schema(path)
    con = _connect(path)
    one = lambda sql: _records(con, sql)[0]  # noqa: E731
    words = r"len(regexp_split_to_array(trim(prompt), '\s+'))"
    out: dict[str, Any] = {"file": str(path)}
    out["rows"] = one("SELECT count(*) AS n FROM metadata")["n"]
    out["prompts"] = one(
        "SELECT count(DISTINCT prompt) AS distinct_prompts, count(*) - count(prompt) AS null, "
        "avg(length(prompt)) AS mean_characters, median(length(prompt)) AS median_characters, "
        f"max(length(prompt)) AS max_characters, avg({words}) AS mean_words, "
        f"median({words}) AS median_words, max({words}) AS max_words FROM metadata"
    )
    out["top_phrases"] = _records(
        con,
        "SELECT phrase, count(*) AS n FROM (SELECT trim(lower(unnest(string_split(prompt, ','))))"
        " AS phrase FROM metadata WHERE prompt IS NOT NULL) WHERE phrase <> '' "
        f"GROUP BY phrase ORDER BY n DESC, phrase LIMIT {TOP}",
    )
    out["duplicates"] = {
        **one(
            "SELECT count(*) AS prompts_repeated, coalesce(sum(n), 0) AS images FROM "
            "(SELECT count(*) AS n FROM metadata WHERE prompt IS NOT NULL GROUP BY prompt "
            "HAVING count(*) > 1)"
        ),
        "top": _records(
            con,
            "SELECT prompt, count(*) AS n FROM metadata WHERE prompt IS NOT NULL GROUP BY prompt "
            f"HAVING count(*) > 1 ORDER BY n DESC, prompt LIMIT {TOP}",
        ),
    }
    out["seed"] = one(
        "SELECT count(DISTINCT seed) AS distinct_seeds, min(seed) AS min, max(seed) AS max, "
        "count(*) - count(seed) AS null FROM metadata"
    )
    for column in ("cfg", "step"):
        out[column] = _records(
            con,
            f"SELECT {column} AS value, count(*) AS n FROM metadata GROUP BY {column} "
            f"ORDER BY n DESC, {column} LIMIT {TOP}",
        )
    out["sampler"] = [
        {**r, "name": SAMPLER_CODES.get(r["code"], "unknown")}
        for r in _records(
            con, "SELECT sampler AS code, count(*) AS n FROM metadata GROUP BY 1 ORDER BY 1"
        )
    ]
    out["nulls"] = one(
        "SELECT "
        + ", ".join(f'count(*) - count("{c}") AS "{c}"' for c in schema.names)
        + " FROM metadata"
    )
    if all(name in schema.names for name in AMLAB_SCHEMA.names):
        out["adherence_by_guidance"] = _records(
            con,
            "SELECT cfg, count(*) AS n, "
            + ", ".join(f"avg({n}_match::INTEGER) AS {n}" for n in JUDGED)
            + " FROM metadata GROUP BY cfg ORDER BY cfg",
        )
        out["audit"] = _records(
            con, "SELECT audit, count(*) AS n FROM metadata GROUP BY audit ORDER BY audit"
        )
    return out
