"""An Env file read and checked (load), and written (dump)."""

from __future__ import annotations

import copy
import pathlib
import re
from dataclasses import dataclass, field

import yaml

from envfile import bounds, counts, lifetime
from envfile.problems import EnvFileError, Path, Problem, field_of, line_at, path_of
from envfile.validation import problems_of
from envfile.yamlread import read

_VM_FIELD = re.compile(r"^vms\[(\d+)\](.*)$")


@dataclass
class EnvFile:
    """A checked Env file. `vms` are the VMs it makes, counts expanded and @files read, each
    a VM of POST /api/envs/'s body; `peers` are asked once the Env exists (the create body
    has no place for them)."""

    name: str
    vms: list[dict]
    lifetime: int | None = None  # seconds; None: the server's default
    deny_outgoing: bool | None = None
    idle_suspend: int | None = None  # minutes; see idle_suspend_given
    idle_suspend_given: bool = False  # False: the server's default (null in the file: never)
    peers: list[str] = field(default_factory=list)
    source: str = "tt.yaml"
    _document: dict = field(default_factory=dict, repr=False)
    _lines: dict[Path, int] = field(default_factory=dict, repr=False)
    _origins: list[int] = field(default_factory=list, repr=False)  # each VM's entry in the file

    def to_create_body(self) -> dict:
        """The JSON body of POST /api/envs/ (the server's defaults where the file says nothing)."""
        body: dict = {"name": self.name}
        if self.lifetime is not None:
            body["lifetime"] = self.lifetime
        if self.deny_outgoing is not None:
            body["deny_outgoing"] = self.deny_outgoing
        if self.idle_suspend_given:
            body["idle_suspend"] = self.idle_suspend
        body["vms"] = copy.deepcopy(self.vms)
        return body

    def document(self) -> dict:
        """The file as a document, @files inlined (counts kept): what a client sends to
        POST /api/envs/?format=envfile, and what dump() writes."""
        return copy.deepcopy(self._document)

    def locate(self, field_name: str) -> tuple[str, int | None]:
        """Where a field of the create body (`vms[4].template`, as the server names it) is
        in the file: (`vms[1].template`, its line), for a VM that a count made too."""
        match = _VM_FIELD.match(field_name or "")
        if match and int(match[1]) < len(self._origins):
            field_name = f"vms[{self._origins[int(match[1])]}]{match[2]}"
        return field_name, line_at(self._lines, path_of(field_name)) if field_name else None

    def problem(self, field_name: str, message: str) -> Problem:
        """A refusal of a create-body field, told against the file."""
        where, line = self.locate(field_name)
        return Problem(line, where, message)


def load(text: str, *, source: str = "tt.yaml", base_dir: pathlib.Path | None = None,
         name: str | None = None) -> EnvFile:
    """Read and check an Env file. `base_dir`: where `user_data: "@file"`s are read from
    (the tt command gives the file's folder; the server gives none, and refuses them).
    `name` overrides the file's name (tt env up --name). Raises EnvFileError listing
    every problem, each with its line."""
    if not isinstance(text, str):
        raise TypeError("load() takes the file's text")
    data, lines, problems = read(text)
    if not problems and not isinstance(data, dict):
        problems = [Problem(1, "", "must be a mapping with name: and vms: (see the schema)")]
    if problems:
        raise EnvFileError(problems, source=source)
    if name is not None:
        data["name"] = name
    problems = problems_of(data, lines)
    if problems:
        raise EnvFileError(problems, source=source)
    return _Checker(data, lines, source, base_dir).envfile()


class _Checker:
    """The rules no schema states: counts, lifetimes in units, @files, and the VMs' names once
    expanded."""

    def __init__(self, data: dict, lines: dict[Path, int], source: str, base_dir: pathlib.Path | None):
        self.data, self.lines, self.source, self.base_dir = data, lines, source, base_dir
        self.problems: list[Problem] = []
        self._files: dict[pathlib.Path, str | Problem] = {}

    def refuse(self, path: Path, message: str) -> None:
        self.problems.append(Problem(line_at(self.lines, path), field_of(path), message))

    def envfile(self) -> EnvFile:
        document = copy.deepcopy(self.data)
        seconds = self._lifetime()
        for i, vm in enumerate(document["vms"]):
            if "user_data" in vm:
                vm["user_data"] = self._user_data(vm["user_data"], ("vms", i, "user_data"))
            if vm.get("net_kind") == "flat" and vm.get("ports"):
                self.refuse(("vms", i, "ports"), "FLAT VMs are reached at their own address and have no "
                                                 "port map")
        vms, origins = self._expand(document["vms"])
        if self.problems:
            raise EnvFileError(self.problems, source=self.source)
        return EnvFile(
            name=document["name"], vms=vms, lifetime=seconds, deny_outgoing=document.get("deny_outgoing"),
            idle_suspend=document.get("idle_suspend"), idle_suspend_given="idle_suspend" in document,
            peers=list(document.get("peers", [])), source=self.source,
            _document=document, _lines=self.lines, _origins=origins,
        )

    def _lifetime(self) -> int | None:
        if "lifetime" not in self.data:
            return None
        seconds = lifetime.seconds(self.data["lifetime"])
        if not bounds.LIFETIME_MIN <= seconds <= bounds.LIFETIME_ABS_MAX:
            self.refuse(("lifetime",), f"must be between {bounds.LIFETIME_MIN} second and "
                                       f"{bounds.LIFETIME_ABS_MAX // 86400} days")
        return seconds

    def _expand(self, entries: list[dict]) -> tuple[list[dict], list[int]]:
        total = sum(counts.size(vm["name"]) for vm in entries)
        if total > bounds.VMS_MAX:
            self.refuse(("vms",), f"makes {total} VMs; an Env file makes at most {bounds.VMS_MAX}")
            return [], []
        made: dict[str, int] = {}
        vms, origins = [], []
        for i, entry in enumerate(entries):
            where = ("vms", i, "name")
            names = counts.expand(entry["name"])
            if not names:
                self.refuse(where, "counts backwards: the first number must not be larger than the last")
            for vm_name in names:
                if vm_name != entry["name"] and not re.fullmatch(bounds.NAME_PATTERN, vm_name):
                    self.refuse(where, f"makes the name {vm_name}, which {bounds.NAME_RULE}")
                    break
                if vm_name in made:
                    other = "" if made[vm_name] == i else f" (as vms[{made[vm_name]}] does)"
                    self.refuse(where, f"names {vm_name} twice{other}: VM names are unique in an Env")
                    break
                made[vm_name] = i
                vms.append({**entry, "name": vm_name})
                origins.append(i)
        return vms, origins

    def _user_data(self, value: str, path: Path) -> str:
        if not value.startswith("@"):
            return value
        if self.base_dir is None:
            self.refuse(path, f"names a file ({value}), which only the tt command reads (tt env up -f); "
                              "send the #cloud-config itself")
            return value
        file = pathlib.Path(value[1:]).expanduser()
        file = file if file.is_absolute() else pathlib.Path(self.base_dir) / file
        if file not in self._files:
            self._files[file] = _read_user_data(file, value)
        found = self._files[file]
        if isinstance(found, str):
            return found
        self.refuse(path, found.message)
        return value


def _read_user_data(file: pathlib.Path, value: str) -> str | Problem:
    limit = bounds.USER_DATA_MAX * 4  # UTF-8: at most four bytes a character
    try:
        with file.open("rb") as stream:
            raw = stream.read(limit + 1)
    except OSError as exc:
        return Problem(None, "", f"cannot read {value}: {exc.strerror or exc}")
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = None
    if content is None or len(raw) > limit or len(content) > bounds.USER_DATA_MAX \
            or not re.fullmatch(bounds.USER_DATA_PATTERN, content):
        return Problem(None, "", f"{value}: {bounds.USER_DATA_RULE}")
    return content


# --- writing ------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):
        # Lists indented under their key (vms:\n  - name: …), as people write them.
        return super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None  # a #cloud-config stays readable
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list):
    # Ports and peers on one line; VMs (mappings) one under another.
    flow = bool(value) and all(isinstance(item, str | int) and not isinstance(item, bool) for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _text)
_Dumper.add_representer(list, _list)


def dump(document: dict) -> str:
    """YAML text of an Env file document, its keys in their order."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=100)
