"""`rayrag serve` as a user runs it: the real command in a process of its own, on a free loopback port, asked over
HTTP and driven in headless Chromium; a replica killed under a request; Ctrl-C and SIGTERM leaving no process.

One server (the tiny RAG model, two replicas retrieving from one pool of two Ray actors, batching with a 0.2 s
window) serves every test up to the last, which
stops it as a terminal's Ctrl-C does; the replica-kill test starts one of its own, whose replicas hold a batch while
the test says so (tests/_holding_generator.py)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from _fixtures_backends import CommandTree
from rayrag.serving.load import free_port

pytestmark = pytest.mark.slow

QUESTIONS = ["in what year was Fundfus Naexpe born?", "what did Fundfus Naexpe call their dog?",
             "near which river did Fundfus Naexpe live?", "where was Quiombrund Piospaerk born?",
             "in what year was Quiombrund Piospaerk born?", "what did Quiombrund Piospaerk call their dog?",
             "what is the job of Fundfus Naexpe?", "who is Quiombrund Piospaerk?"]


class Server(CommandTree):
    """`rayrag serve ARGS` in a new session (its own process group, as a command started from a shell), its output
    in a file; `ready()` waits for /health. `hold`: its replicas hold batches as the files in that directory say."""

    def __init__(self, args: list, log: Path, hold: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = ["-m", "rayrag"] if hold is None else [str(Path(__file__).with_name("_holding_generator.py")),
                                                         str(hold)]
        super().__init__([*command, "serve", *args, "--port", self.port], log)

    def ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"rayrag serve exited {self.proc.returncode}\n{self.log()[-5000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=5).status_code == 200:
                    self.descendants()
                    return
            time.sleep(1)
        raise AssertionError(f"rayrag serve not healthy after {timeout:.0f} s\n{self.log()[-5000:]}")

    def replica_pids(self, deployment: str) -> list[int]:
        pids = []
        for p in self.descendants():
            with contextlib.suppress(psutil.Error):
                if f"ServeReplica:rayrag:{deployment}" in " ".join(p.cmdline()):
                    pids.append(p.pid)
        return pids

    def actor_pids(self) -> list[int]:
        """The retrieval pool's actors among the server's processes."""
        pids = []
        for p in self.descendants():
            with contextlib.suppress(psutil.Error):
                if " ".join(p.cmdline()).startswith("ray::RetrievalActor"):
                    pids.append(p.pid)
        return pids

    def ask(self, timeout: float = 60, **body) -> requests.Response:
        return requests.post(self.url + "/ask", json=body, timeout=timeout)

    def left_behind(self) -> list[str]:
        """The processes this server started that are still alive."""
        alive = []
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        return alive

    def stop(self) -> None:
        self.kill()


@pytest.fixture(scope="module")
def server(tiny_rag, tmp_path_factory):
    s = Server(["--model", tiny_rag, "--replicas", "2", "--distributed_retriever", "ray", "--num_retrieval_workers",
                "2", "--max_batch_size", "8", "--batch_wait_timeout_s", "0.2"],
               tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        s.ready()
        yield s
    finally:
        s.stop()


def test_health_info_and_page(server, tiny_kb):
    assert requests.get(server.url + "/health", timeout=10).json() == {"status": "ok"}
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["model_type"] == "rag_token" and info["is_rag"] and info["generator"] == "bart"
    assert info["n_docs"] == 2 and info["passages"] == 200 and info["max_n_docs"] == 50
    assert Path(info["kb"]) == Path(tiny_kb).resolve() and info["pooling"] == "cls" and info["retrieval"] == "ray"
    assert len(server.replica_pids("Generator")) == 2
    assert len(server.actor_pids()) == 2  # one pool for both replicas, not one per replica
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="question"' in page.text and "http://" not in page.text and "https://" not in page.text


def test_ask_one_and_many(server):
    r = server.ask(question=QUESTIONS[0], n_docs=3, num_beams=2)
    assert r.status_code == 200, r.text
    one = r.json()
    assert one["question"] == QUESTIONS[0] and isinstance(one["answer"], str)
    assert len(one["passages"]) == 3 and set(one["passages"][0]) == {"id", "title", "text", "score"}
    scores = [p["score"] for p in one["passages"]]
    assert scores == sorted(scores, reverse=True)
    t = one["timings"]
    assert 0 < t["retrieval_s"] < t["total_s"] and t["generation_s"] > 0
    many = server.ask(questions=QUESTIONS[:3]).json()
    assert [a["question"] for a in many["answers"]] == QUESTIONS[:3]
    assert all(len(a["passages"]) == 2 for a in many["answers"])  # the model's n_docs


def _same(a: dict, b: dict) -> bool:
    return a["answer"] == b["answer"] and [(p["id"], round(p["score"], 4)) for p in a["passages"]] == \
        [(p["id"], round(p["score"], 4)) for p in b["passages"]]


def test_batched_answers_equal_one_by_one(server):
    alone = [server.ask(question=q).json() for q in QUESTIONS]
    assert all(a["batch_size"] == 1 for a in alone)
    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as ex:
        together = list(ex.map(lambda q: server.ask(question=q).json(), QUESTIONS))
    assert max(a["batch_size"] for a in together) > 1, [a["batch_size"] for a in together]
    assert all(_same(a, b) for a, b in zip(alone, together))
    listed = server.ask(questions=QUESTIONS).json()["answers"]  # fanned out: they join one batch too
    assert max(a["batch_size"] for a in listed) > 1
    assert all(_same(a, b) for a, b in zip(alone, listed))


BAD = [  # (body, headers, status, field or None)
    (b'{"question": ""}', None, 422, "question"),
    (b'{"question": "   "}', None, 422, "question"),
    (('{"question": "%s"}' % ("x" * 1001)).encode(), None, 422, "question"),
    (b'{"question": "who?", "n_docs": 0}', None, 422, "n_docs"),
    (b'{"question": "who?", "n_docs": 51}', None, 422, "n_docs"),
    (b'{"question": "who?", "n_docs": "3"}', None, 400, "n_docs"),
    (b'{"question": "who?", "num_beams": 9}', None, 422, "num_beams"),
    (b'{"question": "who?", "num_beams": true}', None, 400, "num_beams"),
    (b'{"question": "who?", "temperature": 1}', None, 400, "temperature"),
    (b'{"questions": []}', None, 422, "questions"),
    (b'{"questions": ["ok", 3]}', None, 400, "questions[1]"),
    (b'{"question": "a", "questions": ["b"]}', None, 400, "question"),
    (b"{}", None, 400, "question"),
    (b'{"question": "who?"', None, 400, None),
    (b"[1, 2]", None, 400, None),
    (b"\xff\xfe", None, 400, None),
    (b'{"question": "who?"}', {"Content-Type": "text/plain"}, 415, None),
    (b"x" * (65 * 1024), None, 413, None),
]


@pytest.mark.parametrize("body,headers,status,field", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_are_refused_and_harm_nothing(server, body, headers, status, field):
    r = requests.post(server.url + "/ask", data=body, headers=headers or {"Content-Type": "application/json"},
                      timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and err["message"] and "\n" not in err["message"] and not err["retryable"]
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_unknown_routes_and_methods(server):
    assert requests.get(server.url + "/nope", timeout=10).status_code == 404
    r = requests.get(server.url + "/ask", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == "method_not_allowed"


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("Chromium and ChromeDriver not installed (make test installs them: Debian chromium, "
                    "chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-proxy-server",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1200,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_page_in_a_browser(server, tmp_path_factory, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    shot = tmp_path_factory.mktemp("screenshot") / "serve_page.png"
    browser = _browser()
    try:
        browser.get(server.url + "/")
        WebDriverWait(browser, 30).until(lambda d: "passages" in d.find_element(By.ID, "info").text)
        assert "rag_token" in browser.find_element(By.ID, "info").text
        browser.find_element(By.ID, "n_docs").send_keys("3")
        browser.find_element(By.ID, "question").send_keys(QUESTIONS[3])
        browser.find_element(By.ID, "ask").click()
        answer = browser.find_element(By.ID, "answer")
        WebDriverWait(browser, 60).until(lambda d: answer.get_attribute("data-state") in ("done", "error"))
        assert answer.get_attribute("data-state") == "done", answer.text
        expected = server.ask(question=QUESTIONS[3], n_docs=3).json()
        assert browser.find_element(By.ID, "answer-text").text == expected["answer"]
        items = browser.find_elements(By.CSS_SELECTOR, "#passages li.passage")
        assert [i.find_element(By.CLASS_NAME, "title").text for i in items] == [p["title"] for p in expected["passages"]]
        assert [i.find_element(By.CLASS_NAME, "score").text for i in items] == \
            [f"{p['score']:.3f}" for p in expected["passages"]]
        assert "ms" in browser.find_element(By.ID, "timings").text
        # the highlighting the page applies to every passage, on text with markup and regex characters in it
        html = browser.execute_script("const d = document.createElement('div'); d.appendChild(rayragHighlight("
                                      "arguments[0], arguments[1])); return d.innerHTML;",
                                      "<b>Paris</b> (1.5) is big. paris!", "paris")
        assert html == "&lt;b&gt;<mark>Paris</mark>&lt;/b&gt; (1.5) is big. <mark>paris</mark>!"
        html = browser.execute_script("const d = document.createElement('div'); d.appendChild(rayragHighlight("
                                      "arguments[0], arguments[1])); return d.innerHTML;", "a (1.5) b 105", "(1.5)")
        assert html == "a <mark>(1.5)</mark> b 105"
        # an empty question is refused on the page, without a request
        browser.find_element(By.ID, "question").clear()
        browser.find_element(By.ID, "ask").click()
        WebDriverWait(browser, 10).until(lambda d: answer.get_attribute("data-state") == "error")
        browser.find_element(By.ID, "question").send_keys(QUESTIONS[3])
        browser.find_element(By.ID, "ask").click()
        WebDriverWait(browser, 60).until(lambda d: answer.get_attribute("data-state") == "done")
        browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    assert shot.stat().st_size > 10_000
    with capsys.disabled():  # in the test output whatever the capture: a person looks at the page there
        print(f"\nrayrag serve page screenshot: {shot}")


def test_killed_replica_gives_a_retryable_503_and_is_replaced(tiny_rag, tmp_path):
    hold = tmp_path / "hold"
    hold.mkdir()
    s = Server(["--model", tiny_rag, "--request_timeout_s", "60"], tmp_path / "serve.log", hold=hold)
    try:
        s.ready()
        [victim] = s.replica_pids("Generator")
        (hold / "hold").touch()
        result: dict = {}
        asking = threading.Thread(target=lambda: result.update(r=s.ask(question=QUESTIONS[0], timeout=60),
                                                               t=time.monotonic()))
        asking.start()
        deadline = time.monotonic() + 30
        while not (hold / "received").exists():  # the request is inside the replica, held there
            assert time.monotonic() < deadline and asking.is_alive(), result
            time.sleep(0.05)
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        asking.join(60)
        r = result["r"]
        assert r.status_code == 503, r.text
        assert result["t"] - t0 < 10 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["retryable"] is True and r.json()["error"]["code"] == "unavailable"
        (hold / "hold").unlink()
        # the client retries as told, and gets its answer from the replica Serve started in its place
        deadline = time.monotonic() + 180
        while True:
            r = s.ask(question=QUESTIONS[0], timeout=60)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(int(r.headers.get("retry-after", 1)))
        assert r.status_code == 200, r.text
        assert s.replica_pids("Generator") and victim not in s.replica_pids("Generator")
        os.kill(s.proc.pid, signal.SIGTERM)  # as a service manager stops it
        assert s.proc.wait(timeout=90) == 0, s.log()[-3000:]
        assert not s.left_behind(), s.left_behind()
        assert "shutting down" in s.log()
    finally:
        s.stop()


def test_bench_serve_measures_this_server(server, tiny_rag, tmp_path):
    """`rayrag bench serve`'s parts on the running server: the closed-loop load, the floor, the table and the plot."""
    from rayrag.serving.load import floor, load, plot, table

    result = load(server.url, QUESTIONS, 24, 4)
    assert result["qps"] > 0 and result["p50_s"] <= result["p99_s"] <= result["max_s"]
    assert 1 <= result["mean_batch"] <= 4
    base = floor(tiny_rag, QUESTIONS, 4, 8)
    assert base["batch"] == 4 and base["single_qps"] > 0 and base["batch_qps"] > 0
    row = {"label": "2 replicas, batching, wait 200 ms", "replicas": 2, "batching": True, "wait_s": 0.2,
           **{k: result[k] for k in ("qps", "p50_s", "p99_s", "mean_batch")},
           "qps_min": result["qps"], "qps_max": result["qps"], "p99_s_min": result["p99_s"],
           "p99_s_max": result["p99_s"]}
    done = {"options": {"requests": 24, "clients": 4, "rounds": 1}, "floor": base, "rows": [row],
            "machine": {"logical_cores": os.cpu_count()}}
    assert "| 2 replicas, batching, wait 200 ms |" in table(done) and "Floor, no server" in table(done)
    plot(done, tmp_path / "results.png")
    assert (tmp_path / "results.png").stat().st_size > 10_000


def test_ctrl_c_stops_the_server_and_everything_it_started(server):
    assert server.replica_pids("Generator") and server.replica_pids("Frontend") and server.actor_pids()
    os.killpg(server.proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground process group
    assert server.proc.wait(timeout=90) == 0, server.log()[-3000:]
    assert not server.left_behind(), server.left_behind()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "/health", timeout=5)
