"""Docker snapshot create and apply with a 100 MB writable layer, through TT Portal's services.

Each round, a new container from the busybox image on the benchmarks' docker node
(`benchd`, see _docker.py) with 100 MB of random data written into its writable
layer (inside the container); then `snapshot_create` (stop, commit to
`tt/vm-<id>:snap-<name>`, start: the base-class flow), a file changed, and
`snapshot_apply` (stop, the container made again from that image with the same
name, labels, address and limits, start). Tasks run inline; the clock runs from
the service call until the operation has succeeded. The apply is checked: the
changed file is back to what the snapshot held.

    .venv/bin/python bench/docker_snapshot.py [--rounds 3] [--mb 100]
"""

from __future__ import annotations

import time

import _common as c
import _docker as d


def run(rounds: int, mb: int) -> None:
    c.header(f"docker_snapshot: snapshot create + apply of a container with a {mb} MB writable layer")
    creates, applies = [], []
    with c.Cleanup() as cleanup:
        c.throwaway_site(cleanup, client=False)
        cleanup.add("bench docker node", d.remove_node)
        _node, template = d.prepare_node()
        from django.contrib.auth import get_user_model

        from envs.models import Env
        from envs.services import env_create, env_destroy
        from vms.new_vms import NewVm
        from vms.services import snapshot_apply, snapshot_create

        user = get_user_model().objects.create_user(username="bench", password="bench-pw")
        for rnd in range(1, rounds + 1):
            # A fresh container each round: after an apply its layer holds only what
            # changed since the snapshot, and the next commit would be that small.
            op = finished(env_create(owner=user, by=user, name=f"snap{rnd}",
                                     vms=[NewVm(name="box", template=template.name, mem_mb=64, ports=[80])]))
            env = Env.objects.get(pk=op.env_id)
            vm = env.vms.get()
            cleanup.add("VM image tags", d.remove_vm_images, [vm.pk])
            fill = f"dd if=/dev/urandom of=/data bs=1M count={mb} 2>/dev/null && sync && wc -c < /data"
            wrote = int(d.client().containers.get(vm.engine_name).exec_run(["sh", "-c", fill]).output)
            t = time.monotonic()
            snap = finished(snapshot_create(vm=vm, name="s", by=user)).snapshot
            creates.append(time.monotonic() - t)
            d.client().containers.get(vm.engine_name).exec_run(["sh", "-c", "echo changed > /marker"])
            t = time.monotonic()
            finished(snapshot_apply(snapshot=snap, by=user))
            applies.append(time.monotonic() - t)
            box = d.client().containers.get(vm.engine_name)
            if box.exec_run(["cat", "/marker"]).exit_code == 0:
                raise RuntimeError("the applied snapshot still has the file changed after it")
            size = box.exec_run(["sh", "-c", "wc -c < /data"]).output.decode().strip()
            print(f"  round {rnd}: {wrote} bytes in the layer; create {creates[-1]:.2f} s, "
                  f"apply {applies[-1]:.2f} s ({size} bytes back after it)")
            finished(env_destroy(env=env, by=user))
    print(f"  {c.summary('create', creates)}")
    print(f"  {c.summary('apply', applies)}")
    print(f"docker snapshot: create {c.median(creates):.2f} s, apply {c.median(applies):.2f} s "
          f"({mb} MB writable layer, medians of {rounds})")


def finished(op):
    op.refresh_from_db()
    if op.status != "succeeded":
        raise RuntimeError(f"{op.kind} {op.status}: {op.error_code}: {op.error_message}\n{op.log}")
    return op


def main() -> None:
    parser = c.arg_parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    c.require_root()
    run(args.rounds, args.mb)


if __name__ == "__main__":
    main()
