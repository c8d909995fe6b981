"""Preparing a docker node: containers.conf gets runc and the ulimits, and nothing else changes."""

from __future__ import annotations

from engines.docker.host import ensure_containers_conf


def test_it_adds_runc_and_the_ulimits_to_an_empty_host(tmp_path):
    conf = tmp_path / "containers.conf"
    assert ensure_containers_conf(conf) is True
    text = conf.read_text()
    assert '[engine]\nruntime = "runc"' in text
    assert '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]' in text
    assert ensure_containers_conf(conf) is False  # idempotent


def test_it_keeps_what_an_operator_set_and_replaces_only_our_keys(tmp_path):
    conf = tmp_path / "containers.conf"
    conf.write_text('[containers]\nlog_driver = "k8s-file"\n\n[engine]\nruntime = "crun"\n'
                    '\n[network]\nx = 1\n')
    assert ensure_containers_conf(conf) is True
    text = conf.read_text()
    assert 'log_driver = "k8s-file"' in text and "[network]\nx = 1" in text
    assert 'runtime = "runc"' in text and "crun" not in text
    assert text.count("[engine]") == 1 and text.count("[containers]") == 1
    assert ensure_containers_conf(conf) is False


def test_the_service_it_starts_does_not_hold_the_callers_directory(tmp_path, monkeypatch):
    """podman's service outlives whoever started it; conmon, forked for every container,
    cannot start one once the directory the service was started from is gone."""
    from engines.docker import host

    started = []
    answers = iter([False, True])
    monkeypatch.setattr(host, "socket_answers", lambda path: next(answers))
    monkeypatch.setattr(host.subprocess, "Popen", lambda argv, **kwargs: started.append((argv, kwargs)))
    monkeypatch.chdir(tmp_path)
    done = host.ensure_service(f"unix://{tmp_path}/podman.sock", log_path=tmp_path / "podman.log")
    assert done == [f"started podman's Docker API service on {tmp_path}/podman.sock"]
    [(argv, kwargs)] = started
    assert argv[:3] == ["podman", "system", "service"]
    assert kwargs["cwd"] == "/"
