"""docs/guide/envfiles.md: its example is a valid file, and its schema is the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import envfile
from envfile.__main__ import main

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide" / "envfiles.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", GUIDE.read_text(), re.DOTALL)


def test_the_guide_shows_the_schema_as_it_is():
    # Regenerate the block with: python -m envfile schema
    assert json.loads(blocks("json")[-1]) == envfile.schema()


def test_the_guide_s_example_loads(tmp_path):
    (tmp_path / "db-init.yaml").write_text("#cloud-config\npackages: [postgresql]\n")
    ef = envfile.load(blocks("yaml")[0], base_dir=tmp_path)
    assert [vm["name"] for vm in ef.vms] == ["web1", "web2", "web3", "db", "probe"]
    assert ef.peers == ["ci-runner"] and ef.lifetime == 7200


def test_python_m_envfile_checks_a_file(tmp_path, capsys):
    good = tmp_path / "tt.yaml"
    good.write_text("name: a\nvms:\n  - name: w[1..2]\n    template: t\n")
    assert main(["check", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: Env a, 2 VMs\n"
    good.write_text("name: a\nvms:\n  - name: w\n    template: t\n    cpu_num: 0\n")
    assert main(["check", str(good)]) == 1
    assert capsys.readouterr().err == f"{good}:5: vms[0].cpu_num: must be an integer between 1 and 64\n"
    assert main(["nothing"]) == 2
