"""Answer questions with a model and show the passages it retrieved, with their scores.

The questions are the arguments that are not flags (after `--`, even those that look like
flags), and the lines of --file.

Example:
  rayrag ask --model runs/x/best_model "where was Quiombrund Piospaerk born?"
  rayrag ask --model runs/x/best_model --file questions.txt --kb other_kb/ --n_docs 3 --json
"""

from __future__ import annotations

import json

from rayrag.cli.aliases import part_spellings
from rayrag.evaluate.options import AskOptions

HELP = "answer questions, showing the retrieved passages"
OPTIONS = AskOptions
ALIASES = part_spellings(AskOptions)  # --kb, --passages_path, --index_path, --distributed_retriever, --ray_address
POSITIONAL = "questions"


def _read_questions(opts: AskOptions) -> list[str]:
    from rayrag.errors import RayragError

    questions = list(opts.questions)
    if opts.file is not None:
        try:
            text = opts.file.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            line = opts.file.read_bytes()[:e.start].count(b"\n") + 1
            raise RayragError(f"{opts.file}:{line}: not UTF-8; re-save the file as UTF-8") from e
        questions += [q.strip() for q in text.splitlines() if q.strip()]
    if not questions:
        raise RayragError(f"--file {opts.file}: no questions in it; write one question per line")
    return questions


def run(opts: AskOptions, quiet: bool) -> int:
    from rayrag.evaluate.loading import answering
    from rayrag.evaluate.predict import predict

    questions = _read_questions(opts)
    with answering(opts.model, opts.kb, opts.retrieval, opts.cluster, opts.model_type) as loaded:
        preds = predict(loaded, questions, num_beams=opts.num_beams, max_length=opts.max_length, n_docs=opts.n_docs,
                        progress=False)
    for p in preds:
        if opts.json:
            print(json.dumps({"question": p.question, "answer": p.answer, "passages": p.passages}))
            continue
        print(f"Q: {p.question}\nA: {p.answer}")
        for rank, d in enumerate(p.passages, start=1):
            text = d["text"] if len(d["text"]) <= 160 else d["text"][:157] + "..."
            print(f"  {rank}. [{d['score']:.3f}] {d['title']}: {text}")
        print()
    return 0
