"""`recgrad recommend --history`, `recgrad similar` and `recgrad serve`, run for real as commands:
the service is started on a free port and queried over HTTP with urllib."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (the serve extra)")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (the serve extra)")

ENV = dict(os.environ, RECGRAD_NUM_THREADS="1")
COMMAND = [sys.executable, "-c", "import sys; from recgrad.cli import main; sys.exit(main())"]  # as the script


def recgrad(*args, check=True):
    result = subprocess.run([*COMMAND, *map(str, args)], capture_output=True, text=True, env=ENV)
    if check and result.returncode != 0:
        raise AssertionError(f"recgrad {' '.join(map(str, args))} failed: {result.stderr}")
    return result


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mf-run")
    recgrad("train", "--epochs", 2, "--threads", 1, "--out", out)
    return out


@pytest.fixture(scope="module")
def gmf_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gmf-run")
    recgrad("train", "--model", "gmf", "--loss", "bce", "--epochs", 1, "--threads", 1, "--out", out)
    return out


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run, *extra):
    port = free_port()
    process = subprocess.Popen([*COMMAND, "serve", "--run", str(run), "--port", str(port), *extra], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            message = process.stderr.read()
            process.stderr.close()
            raise AssertionError(f"recgrad serve exited: {message}")
        try:
            urllib.request.urlopen(base + "/health", timeout=2).close()
            return process, base
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    stop_server(process)
    raise AssertionError("recgrad serve did not answer /health within 180 s")


def stop_server(process):
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.stderr.close()


@pytest.fixture(scope="module")
def server(run_dir):
    process, base = start_server(run_dir)
    yield base
    stop_server(process)


def call(base, path, body=None, method=None, content_type="application/json"):
    """(status, decoded JSON or text) of one request."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None and content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def cli_lines(result):
    return [line.split("\t") for line in result.stdout.splitlines()]


def test_health(server):
    status, body = call(server, "/health")
    assert status == 200 and body == {"status": "ok", "model": "MF", "users": 2000, "items": 3000}


def test_get_recommend_equals_the_recommend_command(server, run_dir):
    for user in (0, 17, 1999):
        status, body = call(server, f"/recommend?user={user}&n=20")
        assert status == 200 and body["user"] == user
        [[key, items]] = cli_lines(recgrad("recommend", "--run", run_dir, "--users", user, "-n", 20))
        assert key == str(user) and body["items"] == [int(item) for item in items.split()]
        assert len(body["scores"]) == 20 and body["scores"] == sorted(body["scores"], reverse=True)


def test_exclude_seen_false_keeps_the_training_items(server, run_dir):
    from recgrad.cli import load_dataset, read_toml, resolve_config

    data = load_dataset(resolve_config(read_toml(run_dir / "config.toml"), {}))
    seen = set(data.train[5].indices.tolist())
    kept = call(server, "/recommend?user=5&n=100&exclude_seen=false")[1]["items"]
    dropped = call(server, "/recommend?user=5&n=100")[1]["items"]
    assert seen & set(kept) and not seen & set(dropped)


def test_post_recommend_folds_in_as_the_history_command(server, run_dir, tmp_path):
    status, body = call(server, "/recommend", {"items": [3, "11", 40, 99999, "nope"], "n": 20})
    assert status == 200 and body["unknown_items"] == [99999, "nope"]
    assert len(body["items"]) == 20 and not {3, 11, 40} & set(body["items"])
    history = tmp_path / "history.tsv"
    history.write_text("new-user\t3 11 40\n")
    [[key, items]] = cli_lines(recgrad("recommend", "--run", run_dir, "--history", history, "-n", 20))
    assert key == "new-user" and body["items"] == [int(item) for item in items.split()]


def test_get_similar_equals_the_similar_command(server, run_dir):
    status, body = call(server, "/similar?item=42&n=20")
    assert status == 200 and body["item"] == 42 and 42 not in body["items"] and len(body["items"]) == 20
    [[key, items]] = cli_lines(recgrad("similar", "--run", run_dir, "--items", 42, "-n", 20))
    assert key == "42" and body["items"] == [int(item) for item in items.split()]
    status, body = call(server, "/similar?user=8&n=5")
    assert status == 200 and body["user"] == 8 and 8 not in body["users"] and len(body["users"]) == 5


@pytest.mark.parametrize("path, body, status, words", [
    ("/recommend?user=nobody", None, 404, "unknown user id 'nobody'"),
    ("/recommend?user=5000", None, 404, "unknown user id"),
    ("/recommend", None, 400, "query.user"),
    ("/recommend?user=0&n=0", None, 400, "n: expected an integer in [1, 3000]"),
    ("/recommend?user=0&n=3001", None, 400, "n: expected an integer in [1, 3000]"),
    ("/recommend?user=0&n=ten", None, 400, "query.n"),
    ("/recommend?user=0&exclude_seen=maybe", None, 400, "query.exclude_seen"),
    ("/recommend", b'{"items": [1, 2', 400, "malformed JSON"),
    ("/recommend", b"[1, 2]", 400, "expected a JSON object"),
    ("/recommend", {"items": [True], "n": 20}, 400, "body.items.0: expected a raw id"),
    ("/recommend", {"items": [1], "n": "20"}, 400, "body.n"),
    ("/recommend", {"items": "1 2"}, 400, "body.items"),
    ("/recommend", {"n": 20}, 400, "body.items"),
    ("/recommend", {"items": [1], "n": 20, "user": 3}, 400, "body.user"),
    ("/recommend", {"items": []}, 400, "items: empty"),
    ("/recommend", {"items": ["x", 99999]}, 400, "none of the given item ids"),
    ("/recommend", {"items": [1], "n": 0}, 400, "n: expected an integer"),
    ("/similar?item=99999", None, 404, "unknown item id"),
    ("/similar?item=1&n=3000", None, 400, "n: expected an integer in [1, 2999]"),
    ("/similar", None, 400, "exactly one of item"),
    ("/similar?item=1&user=1", None, 400, "exactly one of item"),
    ("/nowhere", None, 404, "Not Found"),
])
def test_bad_requests_answer_4xx_with_one_error(server, path, body, status, words):
    answer_status, answer = call(server, path, body)
    assert answer_status == status
    assert set(answer) == {"error"} and words in answer["error"] and "Traceback" not in answer["error"]


def test_post_without_a_json_content_type_is_a_4xx(server):
    status, answer = call(server, "/recommend", {"items": [1]}, content_type="text/plain")
    assert status == 400 and "Content-Type: application/json" in answer["error"]


def test_wrong_method_is_405(server):
    status, answer = call(server, "/health", {"x": 1}, method="DELETE")
    assert status == 405 and "error" in answer


def test_openapi_page_describes_every_endpoint(server):
    status, schema = call(server, "/openapi.json")
    assert status == 200 and {"/health", "/recommend", "/similar"} <= set(schema["paths"])
    assert {"get", "post"} <= set(schema["paths"]["/recommend"])
    status, page = call(server, "/docs")
    assert status == 200 and "swagger" in page.lower()


def test_concurrent_requests_all_answer(server):
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda user: call(server, f"/recommend?user={user}&n=20"), range(64)))
    assert all(status == 200 and len(body["items"]) == 20 for status, body in answers)


def test_history_file_errors_are_one_line(run_dir, tmp_path):
    malformed = tmp_path / "bad.tsv"
    malformed.write_text("a\t1 2\nb\n")
    for args, words in [
        (("--history", malformed), f"{malformed} line 2: expected 'key<TAB>item item ...'"),
        (("--history", tmp_path / "missing.tsv"), "cannot read it"),
        (("--index", "annoy"), "--index: 'annoy' is not one of exact, faiss"),
    ]:
        result = recgrad("recommend", "--run", run_dir, *args, check=False)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and words in result.stderr and "Traceback" not in result.stderr
    unknown = tmp_path / "unknown.tsv"
    unknown.write_text("a\tzz 5\nb\tyy\n")
    result = recgrad("recommend", "--run", run_dir, "--history", unknown, check=False)
    assert result.returncode == 2 and "line 2: items: none of the given item ids" in result.stderr
    assert result.stdout == ""


def test_similar_command_errors(run_dir):
    result = recgrad("similar", "--run", run_dir, "--items", "1,zz", check=False)
    assert result.returncode == 2 and "--items: unknown item id 'zz'" in result.stderr and result.stdout == ""
    result = recgrad("similar", "--run", run_dir, "--users", "1", "-n", 2000, check=False)
    assert result.returncode == 2 and "-n: expected an integer in [1, 1999]" in result.stderr


def test_models_without_a_user_table_say_what_is_supported(gmf_run, tmp_path):
    history = tmp_path / "history.tsv"
    history.write_text("a\t1 2\n")
    result = recgrad("recommend", "--run", gmf_run, "--history", history, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--history (fold-in of new users) needs a dot-product model (mf, two-tower, lightgcn)" in result.stderr
    assert "GMF" in result.stderr
    assert recgrad("recommend", "--run", gmf_run, "--users", "3", "-n", 5).stdout.startswith("3\t")
    process, base = start_server(gmf_run)
    try:
        assert call(base, "/recommend?user=3&n=5")[0] == 200
        status, answer = call(base, "/recommend", {"items": [1, 2]})
        assert status == 400 and "needs a dot-product model" in answer["error"]
        assert call(base, "/similar?item=1")[0] == 400
    finally:
        stop_server(process)


def test_serve_on_a_busy_port_is_one_line(run_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = recgrad("serve", "--run", run_dir, "--port", busy.getsockname()[1], check=False)
    assert result.returncode == 2 and "cannot listen there" in result.stderr and "Traceback" not in result.stderr


def test_faiss_index_agrees_with_the_exact_scan(run_dir):
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the ann extra)")
    users = ",".join(str(user) for user in range(0, 400, 20))
    exact = cli_lines(recgrad("recommend", "--run", run_dir, "--users", users, "-n", 20))
    approx = cli_lines(recgrad("recommend", "--run", run_dir, "--users", users, "-n", 20, "--index", "faiss"))
    overlap = [len(set(a[1].split()) & set(e[1].split())) / 20 for a, e in zip(approx, exact)]
    assert [a[0] for a in approx] == [e[0] for e in exact] and sum(overlap) / len(overlap) >= 0.95


def test_faiss_serve_logs_the_calibrated_ef_search(run_dir):
    """With --index faiss the service says at start-up which efSearch each index chose, and the
    recall@20 that it measured against the exact scan (the default: the smallest reaching 0.95)."""
    pytest.importorskip("faiss", reason="faiss-cpu is not installed (the ann extra)")
    process, base = start_server(run_dir, "--index", "faiss")
    status, _ = call(base, "/similar?item=1&n=5")
    process.terminate()
    _, log = process.communicate(timeout=20)
    line = next(line for line in log.splitlines() if line.startswith("recgrad: HNSW "))
    chosen = re.findall(r"(recommend|similar-item|similar-user): efSearch (\d+) \(recall@20 ([\d.]+) ", line)
    assert status == 200 and [name for name, _, _ in chosen] == ["recommend", "similar-item", "similar-user"]
    assert all(int(ef) >= 20 and float(recall) >= 0.95 for _, ef, recall in chosen)
