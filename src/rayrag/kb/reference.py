"""A knowledge base in the Hugging Face RAG example's layout, read as it is: what can be checked, and its description.

Its script (use_own_knowledge_dataset.py) saves the passages with `dataset.save_to_disk(passages_path)`:
title, text and embeddings (a list of float32 per row, `Sequence(Value("float32"))`); and the index with
`dataset.get_index("embeddings").save(index_path)`: a FAISS file whose row i is passage i
(`IndexHNSWFlat(d, 128, METRIC_INNER_PRODUCT)` by default). Nothing there records the encoder or file
checksums, so opening checks what it can: the columns and their types, one vector size for every row,
and the index's row count, vector size and metric. Each mismatch is one `RayragError` naming the path
and the fix. Nothing is ever written into it.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import pyarrow as pa
import pyarrow.compute as pc

from rayrag.errors import RayragError
from rayrag.kb.manifest import Manifest

COLUMNS = ("title", "text", "embeddings")
"""The columns rayrag reads; others are ignored."""
METRICS = {faiss.METRIC_INNER_PRODUCT: "inner product", faiss.METRIC_L2: "L2"}


def check_files(passages: Path, index: Path) -> None:
    """Refuse a passages path that is not a directory or an index path that is not a file."""
    if not passages.is_dir():
        raise RayragError(
            f"--passages_path {passages}: no such directory; name the directory the Hugging Face script saved "
            "the passages in (dataset.save_to_disk)")
    if not index.is_file():
        raise RayragError(
            f"--index_path {index}: no such file; name the FAISS file saved beside the passages "
            "(dataset.get_index(\"embeddings\").save)")


def _vector_size(column: pa.ChunkedArray, passages: Path) -> int:
    """The one length of every row's embeddings (float32 lists); refuses other types and ragged rows."""
    t = column.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) or \
            not pa.types.is_float32(t.value_type):
        raise RayragError(
            f"{passages}: the embeddings column holds {t}, not lists of float32; save it with the features "
            "embeddings=Sequence(Value(\"float32\")), as the Hugging Face script does")
    if column.null_count:
        raise RayragError(f"{passages}: {column.null_count} passages have no embeddings; embed every passage")
    if pa.types.is_fixed_size_list(t):
        return int(t.list_size)
    lengths = pc.min_max(pc.list_value_length(column)).as_py()
    if lengths["min"] != lengths["max"] or not lengths["min"]:
        raise RayragError(
            f"{passages}: embeddings of sizes {lengths['min']} to {lengths['max']}; every passage needs a vector "
            "of the same size, made by one encoder")
    return int(lengths["min"])


def open_passages(passages: Path, index: Path):
    """The passages as a memory-mapped `datasets.Dataset`, and a `Manifest` describing them (vector size, passage
    count; no encoder, no files). Checks the columns; `check_index` checks the index against it."""
    from datasets import Dataset, load_from_disk

    check_files(passages, index)
    try:
        dataset = load_from_disk(str(passages))
    except Exception as e:  # datasets raises assorted errors for what is not its directory
        raise RayragError(
            f"{passages}: not a `datasets` directory ({type(e).__name__}); --passages_path names the directory "
            "dataset.save_to_disk wrote") from e
    if not isinstance(dataset, Dataset):
        raise RayragError(f"{passages}: holds several splits; name the directory of one with --passages_path")
    table = dataset.data.table
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise RayragError(
            f"{passages}: no {' or '.join(missing)} column (it has {', '.join(table.column_names)}); the passages "
            "need title, text and embeddings")
    for name in ("title", "text"):
        column = table.column(name)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise RayragError(f"{passages}: the {name} column holds {column.type}, not strings")
        if column.null_count:
            raise RayragError(f"{passages}: {column.null_count} passages have no {name}; fill them or drop them")
    if table.num_rows == 0:
        raise RayragError(f"{passages}: no passages")
    dim = _vector_size(table.column("embeddings"), passages)
    return dataset, Manifest(encoder="", dim=dim, n_passages=table.num_rows, index_type="unknown", passage_words=0)


def check_index(index: faiss.Index, manifest: Manifest, passages: Path, index_path: Path) -> None:
    """Refuse an index that does not fit the passages (rows, vector size) or does not score by inner product."""
    if index.ntotal != manifest.n_passages or index.d != manifest.dim:
        raise RayragError(
            f"{index_path}: {index.ntotal} vectors of size {index.d} where {passages} holds {manifest.n_passages} "
            f"passages with vectors of size {manifest.dim}; the index was not built from these passages: give the "
            "matching --index_path")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise RayragError(
            f"{index_path}: a FAISS index by {METRICS.get(index.metric_type, index.metric_type)} distance, but RAG "
            f"scores passages by inner product; convert it with `rayrag index --passages_path {passages} "
            f"--index_path {index_path} --index_type flat --out KB`, which indexes the stored vectors anew")
