"""`python -m envfile schema` prints the JSON Schema; `python -m envfile check FILE` checks a
file offline (as `tt env validate -f` does), reading its @files beside it. Exit 0: fine;
1: the file's problems, one a line; 2: usage."""

from __future__ import annotations

import json
import pathlib
import sys

import envfile


def main(argv: list[str]) -> int:
    if argv == ["schema"]:
        print(json.dumps(envfile.schema(), indent=2))
        return 0
    if len(argv) == 2 and argv[0] == "check":
        path = pathlib.Path(argv[1])
        try:
            ef = envfile.load(path.read_text(encoding="utf-8"), source=str(path), base_dir=path.parent)
        except envfile.EnvFileError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{path}: Env {ef.name}, {len(ef.vms)} VMs")
        return 0
    print("usage: python -m envfile schema | python -m envfile check FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
