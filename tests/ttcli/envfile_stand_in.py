"""A stand-in for the `envfile` package (issue 26, written in parallel), used by these tests
only while the real one is not in the tree: the few things `tt env up -f` and
`tt env validate -f` call (load, EnvFile.name/document/to_create_body, EnvFileError whose
problems carry line, field and message). The conftest warns whenever it is used.

DELETE THIS FILE once envfile/ is merged (the conftest then never uses it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str


class EnvFileError(ValueError):
    def __init__(self, errors: list[Problem], source: str):
        self.errors = errors
        super().__init__("\n".join(f"{source}:{p.line}: {p.field}: {p.message}" for p in errors))


@dataclass
class EnvFile:
    name: str
    data: dict

    def document(self) -> dict:
        return self.data

    def to_create_body(self) -> dict:
        body = {k: v for k, v in self.data.items() if k in ("name", "lifetime", "deny_outgoing")}
        body["vms"] = [dict(vm) for vm in self.data["vms"]]
        return body


def load(text: str, *, source: str = "tt.yaml", base_dir: Path | None = None) -> EnvFile:
    root = yaml.compose(text)
    data = yaml.safe_load(text)
    problems = []
    vms = next(v for k, v in root.value if k.value == "vms")
    for i, vm_node in enumerate(vms.value):
        for key, value in vm_node.value:
            if key.value == "mem_mb" and int(value.value) < 16:
                problems.append(Problem(value.start_mark.line + 1, f"vms[{i}].mem_mb", "must be at least 16"))
    if problems:
        raise EnvFileError(problems, source)
    return EnvFile(name=data["name"], data=data)
