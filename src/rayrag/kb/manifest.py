"""`manifest.json`: what a knowledge base directory holds, and the check that its files match."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.atomic import atomic_write_text

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PASSAGES_DIR = "passages"
INDEX_FILE = "index.faiss"


@dataclass
class Manifest:
    """Describes a knowledge base directory.

    files maps each file's path relative to the directory to {"bytes": int, "sha256": str}.
    """

    encoder: str
    dim: int
    n_passages: int
    index_type: str
    index_params: dict = field(default_factory=dict)
    metric: str = "inner_product"
    pooling: str = "cls"
    passage_words: int = 100
    n_documents: int = 0
    files: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def write(self, kb_dir: Path) -> None:
        """Write `kb_dir/manifest.json` atomically (fsynced, renamed into place)."""
        atomic_write_text(kb_dir / MANIFEST, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, kb_dir: Path) -> Manifest:
        path = kb_dir / MANIFEST
        if not kb_dir.is_dir():
            raise RayragError(f"{kb_dir}: no such knowledge base directory; build one with `rayrag index`")
        if not path.is_file():
            raise RayragError(
                f"{path}: missing, so {kb_dir} is not a knowledge base; build one with `rayrag index`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format_version") != FORMAT_VERSION:
                raise RayragError(
                    f"{path}: format version {data.get('format_version')!r}, this rayrag reads "
                    f"{FORMAT_VERSION}; rebuild the knowledge base with `rayrag index`")
            return cls(**data)
        except RayragError:
            raise
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise RayragError(f"{path}: damaged manifest ({e}); rebuild with `rayrag index`") from e


def file_digest(path: Path) -> str:
    """sha256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def describe_files(kb_dir: Path) -> dict:
    """The `files` entry of a manifest for every file under `kb_dir` except the manifest."""
    out = {}
    for path in sorted(p for p in kb_dir.rglob("*") if p.is_file() and p.name != MANIFEST):
        out[path.relative_to(kb_dir).as_posix()] = {"bytes": path.stat().st_size,
                                                     "sha256": file_digest(path)}
    return out


def verify_files(kb_dir: Path, manifest: Manifest, checksums: bool = True) -> None:
    """Raise a `RayragError` naming the first file that is missing, truncated or altered."""
    fix = "rebuild the knowledge base with `rayrag index`"
    for rel, info in manifest.files.items():
        path = kb_dir / rel
        if not path.is_file():
            raise RayragError(f"{path}: missing from the knowledge base; {fix}")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise RayragError(
                f"{path}: {size} bytes where the manifest records {info['bytes']} (truncated or "
                f"replaced); {fix}")
        if checksums and file_digest(path) != info["sha256"]:
            raise RayragError(f"{path}: checksum differs from the manifest (corrupted); {fix}")
