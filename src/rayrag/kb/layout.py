"""Where a knowledge base's files are, in either of its two layouts: the one place that tells them apart.

rayrag's layout (`rayrag index`), manifest-checked:
    KB_DIR/manifest.json  KB_DIR/passages/  KB_DIR/index.faiss
the Hugging Face RAG example's layout (its use_own_knowledge_dataset.py), opened read-only as it is:
    PASSAGES_DIR/  a `datasets` save_to_disk directory with title, text, embeddings
    INDEX_FILE     a FAISS index over the embeddings, usually beside it
                   (OUT/my_knowledge_dataset/ and OUT/my_knowledge_dataset_hnsw_index.faiss)

A `KbLocation` names one knowledge base by two strings: `kb` (rayrag: the directory; Hugging Face: the
passages directory) and `index_path` (Hugging Face: the FAISS file; rayrag: None). That pair is what
the retrieval specs carry to every process, and `KnowledgeBase(loc.kb, index_path=loc.index_path)`
opens it. Paths named like rayrag's own files (DIR/passages, DIR/index.faiss) always mean rayrag's
layout, so a rayrag knowledge base that lost its manifest is refused, never opened unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rayrag.errors import RayragError
from rayrag.kb.manifest import INDEX_FILE, MANIFEST, PASSAGES_DIR, Manifest, verify_files

PAIR_FLAGS = ("--passages_path", "--index_path")


@dataclass(frozen=True)
class KbLocation:
    """One knowledge base's files. `index_path` None: rayrag's layout, `kb` its directory; otherwise the Hugging
    Face RAG layout, `kb` its passages directory and `index_path` its FAISS file."""

    kb: str
    index_path: str | None = None

    @property
    def is_reference(self) -> bool:
        """Whether this is the Hugging Face RAG example's layout."""
        return self.index_path is not None

    def rag_paths(self) -> tuple[str, str]:
        """(passages_path, index_path) as a `RagConfig` with index_name="custom" names them."""
        if self.index_path is not None:
            return self.kb, self.index_path
        return str(Path(self.kb) / PASSAGES_DIR), str(Path(self.kb) / INDEX_FILE)

    def verify(self) -> KbLocation:
        """The driver's check, once, before it hands the location out: rayrag's manifest and every file's size
        and sha256 (its clients then check sizes only), or that the Hugging Face layout's two files are there
        (it records no checksums; opening it checks rows and sizes). Returns self."""
        if self.index_path is None:
            verify_files(Path(self.kb), Manifest.read(Path(self.kb)), checksums=True)
        else:
            from rayrag.kb.reference import check_files

            check_files(Path(self.kb), Path(self.index_path))
        return self

    def __str__(self) -> str:
        return self.kb if self.index_path is None else f"{self.kb} (index {self.index_path})"


def is_dataset_dir(path: Path) -> bool:
    """Whether `path` is a directory `datasets.Dataset.save_to_disk` wrote."""
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def directory(kb: str | Path) -> KbLocation:
    """The knowledge base in the directory `kb`, absolute: rayrag's (manifest.json, or its passages/ and
    index.faiss), the Hugging Face layout's passages directory itself (its index: the one .faiss file beside it),
    or a directory holding one `datasets` directory and one .faiss file (the Hugging Face script's output_dir)."""
    d = Path(kb).resolve()
    if (not d.is_dir() or (d / MANIFEST).is_file()
            or ((d / PASSAGES_DIR).is_dir() and (d / INDEX_FILE).is_file())):
        return KbLocation(str(d))  # rayrag's layout; opening names what is wrong with it
    if is_dataset_dir(d):
        indexes = sorted(p for p in d.parent.glob("*.faiss") if p.is_file())
        if len(indexes) != 1:
            raise RayragError(
                f"{d}: the passages of a Hugging Face RAG knowledge base, with {len(indexes)} .faiss files beside "
                "it; name its index with --index_path")
        return from_pair(d, indexes[0])  # rayrag's own file names stay rayrag's layout
    datasets = [p for p in sorted(d.iterdir()) if p.is_dir() and is_dataset_dir(p)]
    indexes = sorted(p for p in d.glob("*.faiss") if p.is_file())
    if len(datasets) == 1 and len(indexes) == 1:
        return from_pair(datasets[0], indexes[0])
    if datasets or indexes:
        raise RayragError(
            f"{d / MANIFEST}: missing, and {d} holds {len(datasets)} `datasets` directories and {len(indexes)} "
            ".faiss files where a Hugging Face RAG knowledge base has one of each; name them with "
            "--passages_path and --index_path")
    return KbLocation(str(d))  # neither layout: opening says that manifest.json is missing


def resolve(kb: str | Path, index_path: str | Path | None = None) -> KbLocation:
    """The absolute location of what a spec or `RetrievalOptions` carries: (passages directory, FAISS file) of the
    Hugging Face layout when `index_path` is given, else the directory `kb` as `directory` reads it."""
    if index_path is None:
        return directory(kb)
    return KbLocation(str(Path(kb).resolve()), str(Path(index_path).resolve()))


def from_pair(passages_path: str | Path | None, index_path: str | Path | None,
              flags: tuple[str, str] = PAIR_FLAGS) -> KbLocation | None:
    """The knowledge base a passages path and an index path name (the reference's flags, or a RAG config's
    fields), from the paths alone: rayrag's own files (DIR/passages, DIR/index.faiss; either alone will do) name
    DIR; any other pair is the Hugging Face layout, and needs both. None when neither is given."""
    given = {name: Path(p) for name, p in zip(("passages", "index"), (passages_path, index_path)) if p is not None}
    if not given:
        return None
    own = {"passages": PASSAGES_DIR, "index": INDEX_FILE}
    parents = {p.parent for p in given.values()}
    if len(parents) == 1 and all(p.name == own[name] for name, p in given.items()):
        return KbLocation(str(parents.pop()))
    if len(given) == 1:
        (name, path), = given.items()
        have, need = flags if name == "passages" else flags[::-1]
        raise RayragError(
            f"{have} {path}: give {need} too; a Hugging Face RAG knowledge base is a passages directory and a "
            "FAISS file, named together")
    return KbLocation(str(given["passages"]), str(given["index"]))


def check_flags(kb: str | Path | None, passages_path: str | Path | None, index_path: str | Path | None) -> None:
    """Refuse flags that contradict each other, from the paths alone: half a Hugging Face pair, or --kb beside a
    --passages_path/--index_path outside it."""
    from_pair(passages_path, index_path)
    parents = {Path(p).parent.resolve() for p in (passages_path, index_path) if p is not None}
    if kb is not None and parents and parents != {Path(kb).resolve()}:
        raise RayragError(f"--kb {kb} contradicts --passages_path/--index_path, which are not inside it; drop one")


def from_flags(kb: str | Path | None, passages_path: str | Path | None = None,
               index_path: str | Path | None = None) -> KbLocation | None:
    """The knowledge base a verb's flags name (absolute): --kb, a directory of either layout, or the reference's
    --passages_path/--index_path; None when none is given."""
    check_flags(kb, passages_path, index_path)
    pair = from_pair(passages_path, index_path)
    if kb is None:
        return resolve(pair.kb, pair.index_path) if pair is not None else None
    found = directory(kb)
    if pair is not None and resolve(pair.kb, pair.index_path) != found:
        raise RayragError(f"--kb {kb} holds {found}, not the --passages_path/--index_path given; drop one")
    return found
