"""The `tt` command line's cost: `tt env up -f tt.yaml --wait` of 3 busybox VMs against the
same Env made through the API by hand, in one run.

Both sides talk HTTP to a real web server (`manage.py runserver` on the node's public
address) whose operations a real task cluster runs (`manage.py tt_qcluster`, the ORM
broker), and both run in the client namespace (tt-bench-client), from where the node's
forwarded ports are reached as a user reaches them. Each side is done when every VM runs
and each forwarded port (80) accepts a TCP connection:

- cli: `tt env up -f tt.yaml --name N --wait --json` as a new process (.venv/bin/tt, else
  `python -m ttcli`), timed from spawning it to its exit: the CLI's own start-up counts.
- api: a small script (plain httpx, no ttclient) started before the clock, then told to go:
  POST /api/envs/ with the same VMs, GET /api/operations/{id}/ every 50 ms until done,
  GET each VM for its ports, then a fresh connect to each port every 50 ms until it
  accepts. Its time is its own, from the POST to the last port.

Rounds alternate which side goes first; each Env is destroyed (through the API, waited
for) before the next. Everything runs on the benchmarks' throwaway node "bench" and
SQLite database, removed on exit.

    .venv/bin/python bench/cli_up.py [--rounds 2]

It ends with one line: `cli_up: cli <s> s, api <s> s, overhead <ms> ms` (medians);
target: overhead <= 300 ms, the CLI's start-up included. Needs the envfile package.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as c

VMS = 3
MEM_MB = 128
TARGET_MS = 300
DEADLINE_S = 300
WEB_PORT = 8790  # on the node's public address, outside its forwarded range
ENV_FILE = """\
# bench/cli_up.py: 3 busybox VMs, each serving HTTP on port 80
name: cli-bench
vms:
""" + "".join(f"""\
  - name: vm{i}
    template: tt/busybox
    mem_mb: {MEM_MB}
    ports: [80]
""" for i in range(VMS))

# The API side, by hand: it reads {"url", "token", "name"} on stdin, then "go", and prints
# {"seconds": s, "env": id} (or {"error": ...}).
API_SIDE = r"""
import json, select, socket, sys, time
import httpx
job = json.loads(sys.stdin.readline())
vms = [{"name": f"vm{i}", "template": "tt/busybox", "mem_mb": job["mem_mb"], "ports": [80]}
       for i in range(job["vms"])]
http = httpx.Client(base_url=job["url"], headers={"Authorization": f"Token {job['token']}"}, timeout=30)
http.get("/api/quota/").raise_for_status()  # the connection is open before the clock
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.readline()
t0 = time.monotonic()
answer = http.post("/api/envs/", json={"name": job["name"], "vms": vms})
if answer.status_code != 202:
    print(json.dumps({"error": answer.text})); sys.exit(1)
op = answer.json()
while not op["is_done"]:
    time.sleep(0.05)
    op = http.get(f"/api/operations/{op['id']}/").json()
if op["status"] != "succeeded":
    print(json.dumps({"error": op["error_message"]})); sys.exit(1)
env = http.get(f"/api/envs/{op['env']}/").json()
targets = set()
for vm in env["vms"]:
    for port in http.get(f"/api/vms/{vm['id']}/").json()["ports"]:
        host, _, number = port["endpoint"].rpartition(":")
        targets.add((host, int(number)))
attempts = {}
while targets:
    for target in targets:
        sock = socket.socket(); sock.setblocking(False); sock.connect_ex(target)
        attempts[sock] = target
    _, done, _ = select.select([], list(attempts), [], 0.05)
    for sock in done:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            targets.discard(attempts[sock])
        del attempts[sock]; sock.close()
    if len(attempts) > 200:
        for sock in list(attempts)[:100]:
            del attempts[sock]; sock.close()
print(json.dumps({"seconds": time.monotonic() - t0, "env": env["id"]}))
"""


def in_netns(*argv: str) -> list[str]:
    return ["ip", "netns", "exec", c.NETNS, *argv]


def tt_argv() -> list[str]:
    script = Path(sys.executable).parent / "tt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ttcli"]


def prepare(work: Path, cleanup: c.Cleanup) -> tuple[str, str]:
    """The node, its template, a user with a token, the task cluster and the web server:
    the server's URL and the token."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from accounts.services import token_create
    from tests.integration.cluster import Cluster

    opts = {k: v for k, v in c.NODE.items() if k != "name"}
    call_command("tt_prepare_node", c.NODE["name"], template=True, stdout=io.StringIO(), **opts)
    user = get_user_model().objects.create_user(username="bench", password="bench-pw")
    _, token = token_create(user=user, name="cli bench")
    cluster = Cluster(work / "cluster.log")
    cleanup.add("task cluster", cluster.close)
    cluster.start()
    url = f"http://{c.NODE_ADDR}:{WEB_PORT}"
    log = open(work / "web.log", "w")  # noqa: SIM115 (the server's; closed with it)
    # The same database as the cluster; the node's address is a host name the server takes.
    env = {**cluster.env, "TT_ALLOWED_HOSTS": f"{c.NODE_ADDR},127.0.0.1,localhost"}
    serve = [sys.executable, "manage.py", "runserver", "--noreload", f"{c.NODE_ADDR}:{WEB_PORT}"]
    web = subprocess.Popen(serve, cwd=c.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    cleanup.add("web server", stop_process, web)
    end = time.monotonic() + 60
    while True:
        try:
            socket.create_connection((c.NODE_ADDR, WEB_PORT), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > end or web.poll() is not None:
                raise RuntimeError(f"the web server did not come up: see {work / 'web.log'}") from None
            time.sleep(0.2)
    return url, token


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def cli_round(rnd: int, url: str, token: str, work: Path) -> tuple[float, int]:
    env_file = work / "tt.yaml"
    env_file.write_text(ENV_FILE)
    env = {**os.environ, "TT_URL": url, "TT_TOKEN": token, "TT_CONFIG_DIR": str(work / "tt-config")}
    argv = in_netns(*tt_argv(), "env", "up", "-f", str(env_file), "--name", f"cli-{rnd}", "--wait", "--json",
                    "--timeout", str(DEADLINE_S))
    t0 = time.monotonic()
    run = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=c.ROOT)
    seconds = time.monotonic() - t0
    if run.returncode != 0:
        raise RuntimeError(f"tt env up exited {run.returncode}: {run.stderr.strip()[-2000:]}")
    return seconds, json.loads(run.stdout)["env"]["id"]


def api_round(rnd: int, url: str, token: str) -> tuple[float, int]:
    proc = subprocess.Popen(in_netns(sys.executable, "-c", API_SIDE), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=c.ROOT)
    proc.stdin.write(json.dumps({"url": url, "token": token, "name": f"api-{rnd}", "vms": VMS,
                                 "mem_mb": MEM_MB}) + "\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the API side did not start: {proc.stderr.read()[-2000:]}")
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=DEADLINE_S)
    result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-2000:]}
    if "error" in result:
        raise RuntimeError(f"the API side failed: {result['error']}")
    return result["seconds"], result["env"]


def destroy(env_id: int) -> None:
    from envs.models import Env
    from envs.services import env_destroy
    from operations.models import Operation

    env = Env.objects.get(pk=env_id)
    op = env_destroy(env=env, by=env.owner)
    end = time.monotonic() + DEADLINE_S
    while Operation.objects.get(pk=op.pk).status not in Operation.DONE:
        if time.monotonic() > end:
            raise RuntimeError(f"Env {env_id} was not destroyed in {DEADLINE_S} s")
        time.sleep(0.2)


def run(rounds: int) -> None:
    c.header(f"cli_up: tt env up --wait of {VMS} busybox VMs vs the same Env through the API by hand")
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup, inline_tasks=False)
        cleanup.add("node", c.remove_node)
        work = Path(tempfile.mkdtemp(prefix="tt-bench-cli-"))
        cleanup.add("work dir", shutil.rmtree, work, ignore_errors=True)
        url, token = prepare(work, cleanup)
        times: dict[str, list[float]] = {"cli": [], "api": []}
        for rnd in range(1, rounds + 1):
            order = ("cli", "api") if rnd % 2 else ("api", "cli")
            for side in order:
                seconds, env_id = (cli_round(rnd, url, token, work) if side == "cli"
                                   else api_round(rnd, url, token))
                times[side].append(seconds)
                print(f"  round {rnd} {side}: {seconds:.2f} s")
                destroy(env_id)
    cli, api = statistics.median(times["cli"]), statistics.median(times["api"])
    overhead_ms = (cli - api) * 1000
    verdict = "met" if overhead_ms <= TARGET_MS else "MISSED"
    print(f"  target overhead <= {TARGET_MS} ms (the CLI's start-up included): {verdict}")
    print(f"cli_up: cli {cli:.2f} s, api {api:.2f} s, overhead {overhead_ms:.0f} ms")


def main() -> None:
    run(c.count_from_args(__doc__, "--rounds", default=2, quick=1, what="rounds per side"))


if __name__ == "__main__":
    main()
