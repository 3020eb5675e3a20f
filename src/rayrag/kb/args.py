"""`KbArgs`: where a verb's knowledge base lives, the part every verb that retrieves nests (`--kb.*`).

Spelled on the command line as before: `--kb DIR`, or the reference's `--passages_path P --index_path I`
(cli/aliases.py maps them to `--kb.path`, `--kb.passages_path`, `--kb.index_path`). The paths alone are
checked here (kb/layout.py); the files are checked when the knowledge base is opened.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rayrag.kb.layout import KbLocation, check_flags, from_flags, from_pair


@dataclass
class KbArgs:
    """The knowledge base to retrieve from (default: the one the model records)."""

    OLD_SPELLINGS: ClassVar[dict[str, str]] = {"--kb": "path", "--passages_path": "passages_path",
                                               "--index_path": "index_path"}
    """The flat flags of these fields (the reference's, and rayrag's --kb), as cli/aliases.py applies them."""

    path: Path | None = None
    """A `rayrag index` directory, or a directory holding a Hugging Face RAG knowledge base (one `datasets`
    directory and one .faiss file). Spelled --kb."""
    passages_path: Path | None = None
    """Reference flag: the passages directory of a Hugging Face RAG knowledge base (use_own_knowledge_dataset.py),
    with --index_path; a rayrag knowledge base's passages/ names its directory."""
    index_path: Path | None = None
    """Reference flag: the FAISS file of a Hugging Face RAG knowledge base, with --passages_path; a rayrag knowledge
    base's index.faiss names its directory."""

    @property
    def given(self) -> bool:
        """Whether any of the three flags was given."""
        return any(p is not None for p in (self.path, self.passages_path, self.index_path))

    def validate(self) -> None:
        """Refuse flags that contradict each other (half a Hugging Face pair, --kb beside a pair outside it)."""
        check_flags(self.path, self.passages_path, self.index_path)

    def resolved(self) -> KbArgs:
        """A copy in which --passages_path/--index_path naming a rayrag knowledge base's own files become --kb, its
        directory (a Hugging Face pair stays as given)."""
        self.validate()
        if self.path is not None:
            return dataclasses.replace(self)
        pair = from_pair(self.passages_path, self.index_path)
        if pair is not None and not pair.is_reference:
            return KbArgs(path=Path(pair.kb))
        return dataclasses.replace(self)

    def absolute(self) -> KbArgs:
        """A copy with every path absolute (for processes that run in another directory)."""
        return KbArgs(*(Path(p).expanduser().resolve() if p is not None else None
                        for p in (self.path, self.passages_path, self.index_path)))

    def location(self) -> KbLocation | None:
        """The knowledge base these flags name (absolute), or None when none is given (kb/layout.py)."""
        return from_flags(self.path, self.passages_path, self.index_path)
