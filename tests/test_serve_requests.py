"""`rayrag serve`'s checks that need no server: the requests it refuses (serving/requests.py) and its flags."""

from __future__ import annotations

import json

import pytest

from rayrag.errors import RayragError
from rayrag.serving.options import ServeOptions
from rayrag.serving.requests import MAX_BODY_BYTES, AskRequest, BadRequest, Limits, check_content, parse_ask

RAG = Limits(is_rag=True, n_docs=5, max_n_docs=20)


def ask(body, limits: Limits = RAG) -> AskRequest:
    return parse_ask(json.dumps(body).encode() if not isinstance(body, bytes) else body, limits)


def refused(body, limits: Limits = RAG) -> BadRequest:
    with pytest.raises(BadRequest) as e:
        ask(body, limits)
    return e.value


def test_a_question_takes_the_models_defaults():
    assert ask({"question": "  who?  "}) == AskRequest(("who?",), False, 5, 1)
    assert ask({"questions": ["a", "b"], "n_docs": 20, "num_beams": 8}) == AskRequest(("a", "b"), True, 20, 8)
    assert ask({"question": "who?", "n_docs": None}).n_docs == 5


@pytest.mark.parametrize("body,status,field,words", [
    ({"question": "who?", "n_docs": 21}, 422, "n_docs", "the knowledge base holds 20 passages"),
    ({"question": "who?", "n_docs": 2.0}, 400, "n_docs", "expected an integer"),
    ({"question": "who?", "num_beams": 0}, 422, "num_beams", "from 1 to 8"),
    ({"question": 3}, 400, "question", "expected a string"),
    ({"questions": "who?"}, 400, "questions", "list of strings"),
    ({"questions": ["who?"] * 33}, 422, "questions", "1 to 32"),
    ({"questions": ["who?", ""]}, 422, "questions[1]", "empty"),
    ({"question": "x" * 1001}, 422, "question", "at most 1000"),
    ({"Question": "who?"}, 400, "Question", "unknown field"),
])
def test_refused_naming_the_field(body, status, field, words):
    e = refused(body)
    assert (e.status, e.field) == (status, field) and words in e.message
    assert e.body()["error"]["field"] == field and e.body()["error"]["retryable"] is False


def test_a_closed_book_model_takes_no_n_docs():
    closed = Limits(is_rag=False, n_docs=None, max_n_docs=None)
    assert ask({"question": "who?"}, closed) == AskRequest(("who?",), False, None, 1)
    assert refused({"question": "who?", "n_docs": 2}, closed).code == "not_rag"


def test_body_and_headers():
    assert refused(b"\xff").code == "bad_json" and "UTF-8" in refused(b"\xff").message
    assert refused(b'"who?"').message == "body: expected a JSON object, got str"
    assert refused(b" " * (MAX_BODY_BYTES + 1)).status == 413
    check_content("application/json; charset=utf-8", "10")
    check_content("Application/JSON", None)
    for ctype, length, status in (("text/plain", "10", 415), (None, "10", 415), ("application/json", "x", 400),
                                  ("application/json", str(MAX_BODY_BYTES + 1), 413)):
        with pytest.raises(BadRequest) as e:
            check_content(ctype, length)
        assert e.value.status == status


@pytest.mark.parametrize("flags,words", [
    (dict(port=0), "--port 0"),
    (dict(host="example.org"), "--host 'example.org'"),
    (dict(replicas=0), "--replicas 0"),
    (dict(max_batch_size=0), "--max_batch_size 0"),
    (dict(batch_wait_timeout_s=-1), "--batch_wait_timeout_s -1"),
    (dict(request_timeout_s=0), "--request_timeout_s 0"),
    (dict(threads_per_replica=-1), "--threads_per_replica -1"),
])
def test_flags_are_checked(flags, words):
    with pytest.raises(RayragError, match=words.replace("(", r"\(")):
        ServeOptions(model="m", **flags).validate()


def test_serve_refuses_before_starting_anything(tmp_path, capsys):
    from rayrag.cli.main import main

    assert main(["serve", "--model", str(tmp_path / "none")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    assert main(["serve", "--model", "m", "--distributed_retriever", "pytorch"]) == 2
    assert "serve with local" in capsys.readouterr().err
    assert main(["serve", "--model", "m", "--num_workers", "2"]) == 2
    assert "--replicas" in capsys.readouterr().err


def test_a_port_in_use_is_refused(tiny_rag, capsys):
    import socket

    from rayrag.cli.main import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", "--model", str(tiny_rag), "--port", str(s.getsockname()[1])]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
