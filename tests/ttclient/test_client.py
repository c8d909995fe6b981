"""ttclient against a fake server (httpx.MockTransport): what it sends, how it reads answers,
refusals, the cooldown, paging, waiting, exec's event stream and files."""

from __future__ import annotations

import json

import httpx
import pytest

from ttclient import ApiError, Client, OperationFailed, WaitTimeout, create_token
from ttclient.guest import server_sent_events

URL = "http://tt.test"


class FakeServer:
    """Answers from a list of (method, path) -> response makers, and keeps every request."""

    def __init__(self, *routes):
        self.routes = list(routes)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for method, path, answer in self.routes:
            if request.method == method and request.url.path == path:
                if isinstance(answer, list):  # answers in turn, the last one repeated
                    return answer.pop(0) if len(answer) > 1 else answer[0]
                return answer(request) if callable(answer) else answer
        return httpx.Response(404, json={"code": "not_found", "message": "no such API resource"})


def client_for(server: FakeServer, **kwargs) -> Client:
    return Client(URL, "ttp_secret", transport=httpx.MockTransport(server), **kwargs)


def operation(op_id=7, status="queued", progress=0, **extra) -> dict:
    return {"id": op_id, "kind": "env_create", "status": status, "is_done": status in ("succeeded", "failed"),
            "progress": progress, "env": 3, "log": "", "error_code": "", "error_message": "", **extra}


def test_requests_carry_the_token_and_a_refusal_carries_code_message_and_field():
    server = FakeServer(("POST", "/api/envs/", httpx.Response(400, json={
        "code": "invalid", "field": "vms[0].template", "message": "must name a template",
        "errors": {"vms[0].template": ["must name a template"]}})))
    with client_for(server) as tt, pytest.raises(ApiError) as refused:
        tt.envs.create("demo", [{"name": "web", "template": "nope"}])
    error = refused.value
    assert (error.status, error.code, error.field) == (400, "invalid", "vms[0].template")
    assert str(error) == "vms[0].template: must name a template"
    sent = server.requests[0]
    assert sent.headers["Authorization"] == "Token ttp_secret"
    assert json.loads(sent.content) == {"name": "demo", "vms": [{"name": "web", "template": "nope"}],
                                        "deny_outgoing": False}


def test_an_answer_that_is_no_json_error_still_gives_an_api_error():
    server = FakeServer(("GET", "/api/quota/", httpx.Response(502, text="Bad Gateway")))
    with client_for(server) as tt, pytest.raises(ApiError) as refused:
        tt.quota()
    error = refused.value
    assert (error.status, error.code, error.message) == (502, "http_502", "Bad Gateway")


def test_the_cooldown_is_waited_out_as_the_server_asks_with_the_same_idempotency_key():
    cooldown = httpx.Response(429, headers={"Retry-After": "3"},
                              json={"code": "cooldown", "message": "wait for the cooldown", "retry_after": 3})
    server = FakeServer(("POST", "/api/envs/3/stop/", [cooldown, httpx.Response(202, json=operation())]))
    told, slept = [], []
    with client_for(server, on_cooldown=lambda s, e: told.append((s, e.code))) as tt:
        tt.sleep = slept.append
        op = tt.envs.stop(3)
    assert op["id"] == 7
    assert told == [(3.0, "cooldown")] and slept == [3.0]
    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    assert len(server.requests) == 2 and len(keys) == 1


def test_a_cooldown_longer_than_the_client_waits_is_raised():
    cooldown = httpx.Response(429, headers={"Retry-After": "900"},
                              json={"code": "cooldown", "message": "later"})
    server = FakeServer(("POST", "/api/envs/3/stop/", cooldown))
    with client_for(server, max_cooldown_wait=60) as tt, pytest.raises(ApiError) as refused:
        tt.envs.stop(3)
    assert refused.value.status == 429 and len(server.requests) == 1


def test_nothing_to_do_is_none_and_lists_follow_their_pages():
    pages = [httpx.Response(200, json={"next": f"{URL}/api/envs/?page=2",
                                       "results": [{"id": 1, "name": "a"}]}),
             httpx.Response(200, json={"next": None, "results": [{"id": 2, "name": "ab"}]})]
    server = FakeServer(("GET", "/api/envs/", pages),
                        ("POST", "/api/envs/2/start/", httpx.Response(200, json={"id": 2})))
    with client_for(server) as tt:
        assert [e["id"] for e in tt.envs.list()] == [1, 2]
        assert tt.envs.start(2) is None
    assert server.requests[0].url.params["live"] == "true"


def test_find_names_one_env_exactly():
    envs = {"next": None, "results": [{"id": 1, "name": "demo"}, {"id": 2, "name": "demo-2"}]}
    server = FakeServer(("GET", "/api/envs/", httpx.Response(200, json=envs)),
                        ("GET", "/api/envs/2/", httpx.Response(200, json={"id": 2, "name": "demo-2"})))
    with client_for(server) as tt:
        assert tt.envs.find("demo")["id"] == 1
        assert tt.envs.find("2")["name"] == "demo-2"
        with pytest.raises(ApiError) as missing:
            tt.envs.find("other")
    assert (missing.value.code, missing.value.field) == ("not_found", "env")


def test_wait_follows_progress_to_success_failure_or_timeout():
    states = [operation(status="running", progress=40), operation(status="succeeded", progress=100)]
    server = FakeServer(("GET", "/api/operations/7/", [httpx.Response(200, json=s) for s in states]))
    seen = []
    with client_for(server) as tt:
        done = tt.operations.wait(7, lambda op: seen.append(op["progress"]), interval=0.001)
    assert done["status"] == "succeeded" and seen == [40, 100]

    failed = operation(status="failed", error_code="start_vm", error_message="web: no memory")
    server = FakeServer(("GET", "/api/operations/7/", httpx.Response(200, json=failed)))
    with client_for(server) as tt, pytest.raises(OperationFailed) as failure:
        tt.operations.wait(7)
    assert (failure.value.code, failure.value.message) == ("start_vm", "web: no memory")

    server = FakeServer(("GET", "/api/operations/7/", httpx.Response(200, json=operation(status="running"))))
    with client_for(server) as tt, pytest.raises(WaitTimeout):
        tt.operations.wait(7, timeout=0.05, interval=0.01)


def test_an_env_file_is_sent_as_yaml_for_the_server_to_parse():
    server = FakeServer(("POST", "/api/envs/", httpx.Response(202, json=operation())))
    with client_for(server) as tt:
        tt.envs.create_from_envfile("name: demo\nvms: []\n")
    sent = server.requests[0]
    assert sent.url.params["format"] == "envfile"
    assert sent.headers["Content-Type"] == "application/yaml"
    assert sent.content == b"name: demo\nvms: []\n"


def test_server_sent_events_are_parsed_as_the_standard_says():
    lines = [": a comment", "event: stdout", 'data: {"data": "a"}', "", "data: one", "data: two", "",
             "event: exit", "data: {}"]
    assert list(server_sent_events(lines)) == [("stdout", '{"data": "a"}'), ("message", "one\ntwo"),
                                               ("exit", "{}")]


def test_exec_whole_and_streamed():
    result = {"exit_code": 3, "stdout": "hi\n", "stderr": "", "stdout_truncated": False,
              "stderr_truncated": False, "duration_ms": 12, "timed_out": False}
    stream = ('event: stdout\ndata: {"data": "hi\\n"}\n\nevent: stderr\ndata: "oops\\n"\n\n'
              f"event: exit\ndata: {json.dumps(result)}\n\n")

    def answer(request):
        if request.url.params.get("stream") == "1":
            return httpx.Response(200, text=stream, headers={"Content-Type": "text/event-stream"})
        return httpx.Response(200, json=result)

    server = FakeServer(("POST", "/api/vms/5/exec/", answer))
    with client_for(server) as tt:
        assert tt.exec(5, ["sh", "-c", "echo hi; exit 3"], env={"A": "1"}, timeout=5)["exit_code"] == 3
        events = list(tt.exec.stream(5, ["true"]))
    assert json.loads(server.requests[0].content) == {"command": ["sh", "-c", "echo hi; exit 3"],
                                                      "env": {"A": "1"}, "timeout": 5}
    assert [(e.kind, e.text) for e in events] == [("stdout", "hi\n"), ("stderr", "oops\n"), ("exit", "")]
    assert events[-1].result["exit_code"] == 3


def test_a_vm_without_the_feature_is_refused_as_unsupported():
    server = FakeServer(("POST", "/api/vms/5/exec/", httpx.Response(422, json={
        "code": "unsupported_feature", "message": "template tt/busybox lacks the feature exec"})))
    with client_for(server) as tt, pytest.raises(ApiError) as refused:
        tt.exec(5, ["true"])
    assert refused.value.unsupported and "lacks the feature exec" in str(refused.value)


def test_files_go_up_and_come_down_streamed():
    stored = {}

    def put(request):
        stored[request.url.params["path"]] = (request.read(), request.url.params["mode"])
        return httpx.Response(201, json={"path": request.url.params["path"]})

    def get(request):
        if request.url.params.get("list") == "1":
            return httpx.Response(200, json=[{"name": "f", "kind": "file", "size": 5}])
        return httpx.Response(200, content=stored[request.url.params["path"]][0])

    server = FakeServer(("PUT", "/api/vms/5/files/", put), ("GET", "/api/vms/5/files/", get))
    with client_for(server) as tt:
        tt.files.put(5, "/tmp/f", iter([b"he", b"llo"]), mode=0o640, size=5)
        assert stored["/tmp/f"] == (b"hello", "0640")
        # The body declares its size (the server refuses a chunked one), from a file too.
        assert server.requests[-1].headers["Content-Length"] == "5"
        assert "Transfer-Encoding" not in server.requests[-1].headers
        with pytest.raises(TypeError, match="size"):
            tt.files.put(5, "/tmp/f", iter([b"x"]))
        assert tt.files.read(5, "/tmp/f") == b"hello"
        assert tt.files.list(5, "/tmp")[0]["name"] == "f"


def test_a_token_is_made_with_the_password():
    server = FakeServer(("POST", "/api/tokens/", httpx.Response(201, json={"id": "u", "token": "ttp_new"})))
    made = create_token(URL, "alice", "pw", name="ci", transport=httpx.MockTransport(server))
    assert made["token"] == "ttp_new"
    sent = server.requests[0]
    assert sent.headers["Authorization"].startswith("Basic ") and json.loads(sent.content) == {"name": "ci"}


def test_an_upload_read_from_a_stream_is_not_sent_again_after_a_429():
    busy = httpx.Response(429, headers={"Retry-After": "1"},
                          json={"code": "rate_limited", "message": "slow down"})
    server = FakeServer(("PUT", "/api/vms/5/files/", busy))
    with client_for(server) as tt, pytest.raises(ApiError) as refused:
        tt.sleep = lambda seconds: None
        tt.files.put(5, "/tmp/f", iter([b"data"]), size=4)
    assert refused.value.status == 429 and len(server.requests) == 1
