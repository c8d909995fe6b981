"""Env files read offline: every field, counts, @files, and every refusal with its line."""

from __future__ import annotations

import textwrap

import pytest

import envfile
from envfile import EnvFileError

FULL = """\
name: ci-web
lifetime: 1h30m
deny_outgoing: true
peers: [db, alice/shared]
vms:
  - name: web[1..3]
    template: tt/busybox
    cpu_num: 2
    mem_mb: 512
    disk_mb: 2048
    ports: [80, 53/udp, {protocol: udp, inner_port: 123}]
    net_kind: nat
    keep_image: true
    rand_uuid: false
  - name: db
    template: tt/debian
    net_kind: flat
    disk_mb: null
    user_data: |
      #cloud-config
      packages: [postgresql]
"""


def problems(text: str, **kwargs) -> list[tuple[int | None, str, str]]:
    with pytest.raises(EnvFileError) as caught:
        envfile.load(textwrap.dedent(text), **kwargs)
    return [(p.line, p.field, p.message) for p in caught.value.errors]


def test_every_field_becomes_the_create_body_with_counts_expanded():
    ef = envfile.load(FULL)
    assert ef.name == "ci-web"
    assert ef.peers == ["db", "alice/shared"]
    body = ef.to_create_body()
    web = {"template": "tt/busybox", "cpu_num": 2, "mem_mb": 512, "disk_mb": 2048,
           "ports": [80, "53/udp", {"protocol": "udp", "inner_port": 123}], "net_kind": "nat",
           "keep_image": True, "rand_uuid": False}
    assert body == {
        "name": "ci-web", "lifetime": 5400, "deny_outgoing": True,
        "vms": [{"name": "web1", **web}, {"name": "web2", **web}, {"name": "web3", **web},
                {"name": "db", "template": "tt/debian", "net_kind": "flat", "disk_mb": None,
                 "user_data": "#cloud-config\npackages: [postgresql]\n"}],
    }


def test_what_the_file_leaves_out_is_left_to_the_server():
    ef = envfile.load("name: a\nvms: [{name: x, template: t}]\n")
    assert ef.to_create_body() == {"name": "a", "vms": [{"name": "x", "template": "t"}]}
    assert ef.lifetime is None and ef.deny_outgoing is None and ef.peers == []


@pytest.mark.parametrize(("given", "seconds"), [
    (3600, 3600), ('"2h"', 7200), ("90m", 5400), ("1d", 86400), ("1h30m", 5400), ("45s", 45),
])
def test_a_lifetime_is_seconds_or_a_duration(given, seconds):
    ef = envfile.load(f"name: a\nlifetime: {given}\nvms: [{{name: x, template: t}}]\n")
    assert ef.to_create_body()["lifetime"] == seconds


def test_counts_pad_to_their_first_number_and_the_document_keeps_them():
    ef = envfile.load("name: a\nvms:\n  - {name: 'n[08..10]', template: t}\n")
    assert [vm["name"] for vm in ef.vms] == ["n08", "n09", "n10"]
    assert ef.document()["vms"][0]["name"] == "n[08..10]"


def test_a_field_of_a_counted_vm_is_located_on_its_entry():
    ef = envfile.load(FULL)
    assert ef.locate("vms[2].mem_mb") == ("vms[0].mem_mb", 9)
    assert ef.locate("vms[3].user_data") == ("vms[1].user_data", 19)
    assert ef.locate("vms[3]") == ("vms[1]", 15)
    assert ef.locate("lifetime") == ("lifetime", 2)
    assert ef.locate("owner") == ("owner", 1)  # not in the file: the file itself
    assert str(ef.problem("vms[1].template", "must name an existing, enabled template").describe("f.yaml")) \
        == "f.yaml:7: vms[0].template: must name an existing, enabled template"


def test_user_data_from_a_file_relative_to_the_env_file(tmp_path):
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "web.yaml").write_text("#cloud-config\nruncmd: [true]\n")
    text = "name: a\nvms:\n  - {name: 'w[1..2]', template: t, user_data: '@init/web.yaml'}\n"
    ef = envfile.load(text, base_dir=tmp_path)
    assert [vm["user_data"] for vm in ef.vms] == ["#cloud-config\nruncmd: [true]\n"] * 2
    assert ef.document()["vms"][0]["user_data"] == "#cloud-config\nruncmd: [true]\n"


def test_user_data_files_that_cannot_be_taken(tmp_path):
    (tmp_path / "shell.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "big.yaml").write_text("#cloud-config\n" + "#" * 20000)
    text = """\
        name: a
        vms:
          - {name: a, template: t, user_data: "@missing.yaml"}
          - {name: b, template: t, user_data: "@shell.sh"}
          - {name: c, template: t, user_data: "@big.yaml"}
        """
    found = problems(text, base_dir=tmp_path)
    assert [(line, field) for line, field, _ in found] == [
        (3, "vms[0].user_data"), (4, "vms[1].user_data"), (5, "vms[2].user_data")]
    assert found[0][2] == "cannot read @missing.yaml: No such file or directory"
    assert found[1][2].startswith("@shell.sh: must be a #cloud-config document")


def test_without_a_base_dir_a_file_reference_is_refused():
    # The server's case: it never reads files.
    found = problems("name: a\nvms:\n  - name: a\n    template: t\n    user_data: '@/etc/passwd'\n")
    assert found == [(5, "vms[0].user_data", "names a file (@/etc/passwd), which only the tt command "
                                               "reads (tt env up -f); send the #cloud-config itself")]


def test_the_name_can_be_given_instead_of_the_file_s():
    assert envfile.load("vms: [{name: x, template: t}]\n", name="other").name == "other"


def test_str_lists_every_problem_with_file_line_and_field():
    text = """\
        name: ci
        vms:
          - name: web
            template: tt/busybox
          - name: db
            template: tt/debian
            mem_mb: 0
            cpu_num: "2"
        """
    with pytest.raises(EnvFileError) as caught:
        envfile.load(textwrap.dedent(text), source="ci/tt.yaml")
    assert str(caught.value) == (
        "ci/tt.yaml:7: vms[1].mem_mb: must be an integer between 1 and 262144 MiB\n"
        "ci/tt.yaml:8: vms[1].cpu_num: must be an integer between 1 and 64"
    )


def test_unknown_keys_are_refused_at_their_line():
    text = """\
        name: ci
        lifetme: 2h
        vms:
          - name: web
            template: tt/busybox
            memory: 512
            ports: [{port: 80}]
        """
    assert problems(text) == [
        (2, "lifetme", "is not a field of an Env file "
                       "(its fields: name, lifetime, deny_outgoing, idle_suspend, peers, vms)"),
        (6, "vms[0].memory", "is not a field of a VM (its fields: name, template, cpu_num, mem_mb, disk_mb, "
                             "ports, net_kind, user_data, keep_image, rand_uuid)"),
        (7, "vms[0].ports[0]", 'must be a port (1-65535), "<port>/tcp", "<port>/udp" or '
                               "{protocol: tcp|udp, inner_port: <port>}"),
    ]


def test_wrong_types_and_missing_fields():
    text = """\
        name: 12
        lifetime: soon
        deny_outgoing: "yes"
        peers: [a/B]
        vms:
          - template: [x]
            net_kind: bridge
            keep_image: 1
        """
    assert problems(text) == [
        (1, "name", "must be 1-63 characters of lower-case letters, digits and hyphens, starting with a "
                    "letter and not ending with a hyphen"),
        (2, "lifetime", 'must be a number of seconds, or a duration such as "2h", "90m", "1d" or "1h30m"'),
        (3, "deny_outgoing", "must be true or false"),
        (4, "peers[0]", "must name an Env: one of yours by its name, or another owner's as owner/name"),
        (6, "vms[0].name", "is required"),
        (6, "vms[0].template", "must name an existing, enabled template"),
        (7, "vms[0].net_kind", "must be one of: nat, flat"),
        (8, "vms[0].keep_image", "must be true or false"),
    ]


def test_an_integer_is_an_int_and_text_is_unicode():
    text = 'name: a\nvms:\n  - name: w\n    template: "tt/\\ud800"\n    mem_mb: 512.0\n'
    # libyaml refuses the escape itself; PyYAML's own parser lets it through to our check.
    [(line, _, message)] = problems(text)
    assert line == 4 and message in ("is not valid YAML: found invalid Unicode character escape code",
                                     "is not valid Unicode text (a lone surrogate)")
    assert problems(text.replace("\\ud800", "x")) == [
        (5, "vms[0].mem_mb", "must be an integer between 1 and 262144 MiB")]


def test_a_file_without_vms_or_name():
    assert problems("lifetime: 2h\n") == [(1, "name", "is required"), (1, "vms", "is required")]
    assert problems("name: a\nvms: []\n") == [(2, "vms", "must list at least one VM")]


@pytest.mark.parametrize(("text", "expected"), [
    ("name: a\nvms: [\n", (3, "", "is not valid YAML")),
    ("name: a\n  vms: 1\n", (2, "", "is not valid YAML")),
    ("", (1, "", "is empty")),
    ("- a\n- b\n", (1, "", "must be a mapping")),
    ("name: a\nname: b\nvms: []\n", (2, "name", "is given twice (also on line 1)")),
    ("name: !!python/object:os.system x\n", (1, "name", "uses the YAML tag")),
    ("name: 2026-01-01\nvms: [{name: a, template: t}]\n", (1, "name", "is a YAML timestamp")),
    ("name: a\nvms:" + " [" * 40 + " ]" * 40 + "\n", (2, "", "nests lists and mappings more than 32")),
])
def test_bad_yaml_is_refused_with_its_line(text, expected):
    (line, field, message), *_ = problems(text)
    assert (line, field) == expected[:2]
    assert message.startswith(expected[2])


def test_a_billion_laughs_is_refused_before_it_expands():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    found = problems("\n".join(lines) + "\n")
    assert found == [(None, "", "is too large: more than 50000 values once its aliases are expanded")]


def test_merge_keys_share_a_vm_s_settings():
    text = """\
        name: a
        vms:
          - &base {name: web, template: tt/debian, mem_mb: 1024}
          - {<<: *base, name: db, mem_mb: 2048}
        """
    ef = envfile.load(textwrap.dedent(text))
    assert ef.vms[1] == {"name": "db", "template": "tt/debian", "mem_mb": 2048}


def test_counts_that_cannot_be_expanded():
    text = """\
        name: a
        vms:
          - {name: 'web[3..1]', template: t}
          - {name: 'db[1..2]', template: t}
          - {name: db2, template: t}
          - {name: 'abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghijab[1..10]', template: t}
        """
    found = problems(text)
    assert [(line, field) for line, field, _ in found] == [(3, "vms[0].name"), (5, "vms[2].name"),
                                                          (6, "vms[3].name")]
    assert found[0][2] == "counts backwards: the first number must not be larger than the last"
    assert found[1][2] == "names db2 twice (as vms[1] does): VM names are unique in an Env"
    assert found[2][2].startswith("makes the name abcdefghij")


def test_a_count_too_large_is_refused_without_expanding_it():
    assert problems("name: a\nvms:\n  - name: w[1..9999]\n    template: t\n") == [
        (2, "vms", "makes 9999 VMs; an Env file makes at most 1000")]


def test_ports_on_a_flat_vm_are_refused_as_the_server_does():
    assert problems("name: a\nvms:\n  - {name: a, template: t, net_kind: flat, ports: [22]}\n") == [
        (3, "vms[0].ports", "FLAT VMs are reached at their own address and have no port map")]


def test_a_zero_lifetime_is_refused():
    assert problems("name: a\nlifetime: 0h\nvms: [{name: a, template: t}]\n") == [
        (2, "lifetime", "must be between 1 second and 3650 days")]


def test_dump_writes_a_file_that_loads_back_the_same():
    ef = envfile.load(FULL)
    text = envfile.dump(ef.document())
    assert "user_data: |\n      #cloud-config\n" in text
    assert "ports: [80, 53/udp, {protocol: udp, inner_port: 123}]" not in text  # mappings are not inline
    again = envfile.load(text)
    assert again.to_create_body() == ef.to_create_body()
    assert again.document() == ef.document()


def test_the_schema_is_draft_2020_12_with_descriptions():
    from jsonschema import Draft202012Validator

    schema = envfile.schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    vm = schema["$defs"]["vm"]["properties"]
    assert all("description" in vm[name] for name in vm)
    assert all("description" in field for field in schema["properties"].values())
    schema["title"] = "changed"
    assert envfile.schema()["title"] != "changed"


def test_idle_suspend_is_minutes_or_null_and_left_to_the_server_when_absent():
    body = envfile.load("name: a\nidle_suspend: 30\nvms: [{name: x, template: t}]\n").to_create_body()
    assert body["idle_suspend"] == 30
    body = envfile.load("name: a\nidle_suspend: null\nvms: [{name: x, template: t}]\n").to_create_body()
    assert body["idle_suspend"] is None  # never, whatever the server's default
    assert problems("name: a\nidle_suspend: 0\nvms: [{name: x, template: t}]\n") == [
        (2, "idle_suspend", "must be an integer between 1 and 10080")]
