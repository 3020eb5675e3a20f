"""What a request to `rayrag serve` may say, checked before it reaches a model.

`parse_ask` turns the body of `POST /ask` into an `AskRequest`, or raises `BadRequest` with the HTTP status and a
one-line message that names the field. Nothing here imports Ray or torch: the checks run in the HTTP front end,
so a bad request never joins a batch, and they are unit-tested on their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_BODY_BYTES = 64 * 1024
"""Largest request body (413 beyond)."""
MAX_QUESTION_CHARS = 1000
"""Longest question, in characters (422 beyond)."""
MAX_QUESTIONS = 32
"""Most questions in one `{"questions": [...]}` request (422 beyond)."""
MAX_BEAMS = 8
"""Most beams a request may ask for."""
MAX_N_DOCS = 50
"""Most passages a request may ask for (fewer when the knowledge base holds fewer)."""
FIELDS = ("question", "questions", "n_docs", "num_beams")


class BadRequest(Exception):
    """A request the server refuses: `status` (4xx), a `code` for programs, a one-line message, the field at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "field": self.field, "retryable": False}}


@dataclass(frozen=True)
class Limits:
    """What the loaded model allows: `is_rag` (a closed-book model takes no `n_docs`), its default `n_docs`, and the
    most passages a request may ask for (`max_n_docs`: the knowledge base's size, at most `MAX_N_DOCS`)."""

    is_rag: bool
    n_docs: int | None
    max_n_docs: int | None


@dataclass(frozen=True)
class AskRequest:
    """A checked request: its questions, and whether it came as `{"questions": [...]}` (answered as a list)."""

    questions: tuple[str, ...]
    many: bool
    n_docs: int | None
    num_beams: int


def check_content(content_type: str | None, content_length: str | None) -> None:
    """The headers of `POST /ask`: JSON (415 otherwise), and no larger than `MAX_BODY_BYTES` (413)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise BadRequest(415, "unsupported_media_type",
                         f"Content-Type {content_type or '(none)'!r}: send application/json")
    if content_length is not None:
        try:
            size = int(content_length)
        except ValueError:
            raise BadRequest(400, "bad_request", f"Content-Length {content_length!r}: not a number") from None
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, "too_large", f"body of {size} bytes: at most {MAX_BODY_BYTES}")


def _int(data: dict, field: str, low: int, high: int, why: str) -> int | None:
    value = data.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(400, "bad_type", f"{field} {json.dumps(value)}: expected an integer", field)
    if not low <= value <= high:
        raise BadRequest(422, "out_of_range", f"{field} {value}: must be from {low} to {high}{why}", field)
    return value


def _question(value, field: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(400, "bad_type", f"{field}: expected a string, got {type(value).__name__}", field)
    text = value.strip()
    if not text:
        raise BadRequest(422, "empty_question", f"{field}: empty; ask a question", field)
    if len(text) > MAX_QUESTION_CHARS:
        raise BadRequest(422, "question_too_long",
                         f"{field}: {len(text)} characters; at most {MAX_QUESTION_CHARS}", field)
    return text


def parse_ask(body: bytes, limits: Limits) -> AskRequest:
    """The body of `POST /ask`: `{"question": ...}` or `{"questions": [...]}`, with optional `n_docs` and
    `num_beams`. Raises `BadRequest` naming the field for anything else."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, "too_large", f"body of {len(body)} bytes: at most {MAX_BODY_BYTES}")
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadRequest(400, "bad_json", f"body: not UTF-8 (byte {e.start})") from None
    except ValueError as e:
        raise BadRequest(400, "bad_json", f"body: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "bad_json", f"body: expected a JSON object, got {type(data).__name__}")
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise BadRequest(400, "unknown_field", f"{unknown[0]}: unknown field; the fields are {', '.join(FIELDS)}",
                         unknown[0])
    if ("question" in data) == ("questions" in data):
        raise BadRequest(400, "missing_question" if "question" not in data else "both_questions",
                         "give exactly one of question (a string) or questions (a list of strings)",
                         "question")
    if "question" in data:
        questions, many = (_question(data["question"], "question"),), False
    else:
        items = data["questions"]
        if not isinstance(items, list):
            raise BadRequest(400, "bad_type", f"questions: expected a list of strings, got {type(items).__name__}",
                             "questions")
        if not 1 <= len(items) <= MAX_QUESTIONS:
            raise BadRequest(422, "out_of_range", f"questions: {len(items)} given; send 1 to {MAX_QUESTIONS}",
                             "questions")
        questions, many = tuple(_question(q, f"questions[{i}]") for i, q in enumerate(items)), True
    if "n_docs" in data and data["n_docs"] is not None and not limits.is_rag:
        raise BadRequest(422, "not_rag", "n_docs: this is a closed-book model, which retrieves no passages; drop it",
                         "n_docs")
    high = min(limits.max_n_docs or MAX_N_DOCS, MAX_N_DOCS)
    n_docs = _int(data, "n_docs", 1, high, f" (the knowledge base holds {limits.max_n_docs} passages)"
                  if limits.max_n_docs is not None and limits.max_n_docs < MAX_N_DOCS else "")
    beams = _int(data, "num_beams", 1, MAX_BEAMS, "")
    return AskRequest(questions, many, n_docs if n_docs is not None else limits.n_docs, beams or 1)
