"""A fake `jailer`: what Firecracker's jailer does that the driver depends on, minus the
privileges (docs/jailer.md and src/jailer/src/env.rs at v1.16.1).

- takes `--id --exec-file --uid --gid --chroot-base-dir`, then `--` and firecracker's
  own arguments; refuses an id that is not letters, digits and hyphens (at most 64),
  an exec file or chroot base that does not exist;
- builds <chroot base>/<exec file's name, symlinks resolved>/<id>/root, copies the
  exec file into it, and "mknod"s dev/kvm and dev/net/tun there, failing as the real
  one does when they exist already (a chroot left by an earlier run);
- execs the copy (same pid) as `<copy> --id <id> --start-time-us N --start-time-cpu-us N
  <firecracker's arguments>`, with the environment cleared but for FAKE_FC_* and
  FAKE_FC_ROOT=<the chroot>, which the fake firecracker uses in place of a real chroot:
  every path it is given resolves inside it.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time


def fail(message: str) -> None:
    sys.exit(f"Jailer error: {message}")


def main() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:
        print("Jailer v1.16.1 (fake, tests/engines/firecracker)")
        return
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    if len(argv) % 2:
        fail(f"arguments must come in pairs: {argv}")
    args = dict(zip(argv[::2], argv[1::2], strict=True))
    for required in ("--id", "--exec-file", "--uid", "--gid"):
        if required not in args:
            fail(f"missing argument {required}")
    unknown = set(args) - {"--id", "--exec-file", "--uid", "--gid", "--chroot-base-dir", "--cgroup-version",
                           "--netns", "--parent-cgroup"}
    if unknown:
        fail(f"unexpected arguments {sorted(unknown)}")
    vm_id = args["--id"]
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", vm_id):
        fail(f"Invalid instance ID: {vm_id}")
    exec_file = os.path.realpath(args["--exec-file"])
    if not os.path.isfile(exec_file):
        fail(f"{exec_file} is not a file")
    base = os.path.realpath(args.get("--chroot-base-dir", "/srv/jailer"))
    if not os.path.isdir(base):
        fail(f"{base} is not a directory")
    if not (args["--uid"].isdigit() and args["--gid"].isdigit()):
        fail(f"invalid uid or gid: {args['--uid']}, {args['--gid']}")
    exec_name = os.path.basename(exec_file)
    root = os.path.join(base, exec_name, vm_id, "root")
    os.makedirs(root, exist_ok=True)  # "nothing is done if the path already exists"
    copy = os.path.join(root, exec_name)
    shutil.copy2(exec_file, copy)
    for device in ("dev/net/tun", "dev/kvm"):
        path = os.path.join(root, device)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            fail(f"Failed to create /{device} via mknod inside the jail: File exists (os error 17)")
    env = {key: value for key, value in os.environ.items() if key.startswith("FAKE_FC_")}
    env["FAKE_FC_ROOT"] = root
    os.chdir(root)
    now_us = str(int(time.time() * 1e6))
    os.execve(copy, [copy, "--id", vm_id, "--start-time-us", now_us, "--start-time-cpu-us", "0", *extra], env)


if __name__ == "__main__":
    main()
