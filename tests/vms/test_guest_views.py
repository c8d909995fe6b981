"""The VM page's ways into the guest (vms/guest_views.py): run a command and see how it
ended, upload a file, download one; refusals said plainly, CSRF kept."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from operations.models import Operation
from tests.conftest import make_staff
from vms.models import Vm


@pytest.fixture
def vm(alice, make_env, guest) -> Vm:
    return make_env(alice).vms.get()


@pytest.fixture
def browser(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def test_the_vm_page_offers_a_command_an_upload_and_a_download(browser, vm):
    page = browser.get(f"/vms/{vm.pk}/").content.decode()
    assert 'id="into-guest"' in page
    for url in (f"/vms/{vm.pk}/run/", f"/vms/{vm.pk}/upload/", f"/vms/{vm.pk}/download/"):
        assert f'action="{url}"' in page


def test_the_vm_page_says_why_not_when_the_template_has_no_agent(browser, vm, template):
    template.features = []
    template.save()
    page = browser.get(f"/vms/{vm.pk}/").content.decode()
    assert "lacks the feature exec" in page and "lacks the feature files" in page
    assert f'action="/vms/{vm.pk}/run/"' not in page


def test_the_vm_page_offers_nothing_to_staff_without_the_permission(vm, template):
    viewer = Client()
    viewer.force_login(make_staff("vera", "envs.view_env", "vms.view_vm"))
    page = viewer.get(f"/vms/{vm.pk}/").content.decode()
    assert "You may not do this on another user" in page and f'action="/vms/{vm.pk}/run/"' not in page


def test_it_runs_a_command_and_shows_its_exit_code_and_output(browser, vm, guest):
    response = browser.post(f"/vms/{vm.pk}/run/", {"command": "echo 'two words' <b>", "timeout": "10"})
    assert response.status_code == 200
    page = response.content.decode()
    assert '<dd id="exit-code">0</dd>' in page
    assert "two words &lt;b&gt;" in page  # the output, escaped
    assert guest.requests[0].argv == ("echo", "two words", "<b>") and guest.requests[0].timeout == 10
    assert Operation.objects.get(kind="vm_exec").requested_by.username == "alice"


def test_it_runs_a_command_through_a_shell_when_asked_and_shows_stderr(browser, vm, guest):
    page = browser.post(f"/vms/{vm.pk}/run/", {"command": "fail | cat", "shell": "on"}).content.decode()
    assert guest.requests[0].argv == ("sh", "-c", "fail | cat")
    assert "sh: not found" in page or "not found" in page  # the fake knows no sh: exit 127, on stderr
    assert '<dd id="exit-code">127</dd>' in page


@pytest.mark.parametrize(("form", "said"), [
    ({"command": "echo 'unclosed"}, "cannot be split into words"),
    ({"command": ""}, "must be a non-empty list"),
    ({"command": "echo", "timeout": "soon"}, "whole number of seconds"),
    ({"command": "echo", "timeout": "900"}, "between 1 and 600"),
])
def test_a_refused_command_is_a_message_on_the_vm_page(browser, vm, guest, db_state, form, said):
    before = db_state()
    response = browser.post(f"/vms/{vm.pk}/run/", form, follow=True)
    assert response.redirect_chain[-1][0] == f"/vms/{vm.pk}/#into-guest"
    assert any(said in m for m in _messages(response)), _messages(response)
    assert db_state() == before and not guest.requests


def test_a_template_without_exec_is_refused_naming_the_feature(browser, vm, template):
    template.features = []
    template.save()
    response = browser.post(f"/vms/{vm.pk}/run/", {"command": "ls"}, follow=True)
    assert any("lacks the feature exec" in m for m in _messages(response))


def test_the_rate_limit_is_the_429_page(browser, vm, settings):
    settings.TT_RATE_EXEC = "1/m"
    browser.post(f"/vms/{vm.pk}/run/", {"command": "ls"})
    response = browser.post(f"/vms/{vm.pk}/run/", {"command": "ls"})
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1


def test_another_users_vm_is_a_404(vm, bob, guest):
    other = Client()
    other.force_login(bob)
    assert other.post(f"/vms/{vm.pk}/run/", {"command": "ls"}).status_code == 404
    upload = SimpleUploadedFile("a.txt", b"x")
    assert other.post(f"/vms/{vm.pk}/upload/", {"path": "/tmp/", "file": upload}).status_code == 404
    assert other.post(f"/vms/{vm.pk}/download/", {"path": "/etc/hostname"}).status_code == 404
    assert not guest.requests and not guest.files


def test_it_uploads_a_file_keeping_its_name_in_a_directory(browser, vm, guest):
    upload = SimpleUploadedFile("notes.txt", b"hello guest")
    response = browser.post(f"/vms/{vm.pk}/upload/", {"path": "/tmp/", "file": upload, "mode": "0600"},
                            follow=True)
    assert guest.files["/tmp/notes.txt"] == b"hello guest" and guest.modes["/tmp/notes.txt"] == 0o600
    assert "Uploaded 11 bytes to /tmp/notes.txt." in _messages(response)


def test_an_upload_past_the_limit_is_refused_and_nothing_reaches_the_guest(browser, vm, guest, settings):
    settings.TT_FILE_MAX_MB = 1
    upload = SimpleUploadedFile("big.bin", b"x" * (1024 * 1024 + 1))
    response = browser.post(f"/vms/{vm.pk}/upload/", {"path": "/tmp/big.bin", "file": upload}, follow=True)
    assert any("larger than the 1 MiB" in m for m in _messages(response)), _messages(response)
    assert not guest.files and not Operation.objects.filter(kind="vm_file_put").exists()


def test_an_upload_needs_its_csrf_token(alice, vm, guest):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    upload = SimpleUploadedFile("a.txt", b"x")
    assert strict.post(f"/vms/{vm.pk}/upload/", {"path": "/tmp/a", "file": upload}).status_code == 403
    assert strict.post(f"/vms/{vm.pk}/run/", {"command": "ls"}).status_code == 403
    assert strict.post(f"/vms/{vm.pk}/download/", {"path": "/etc/hostname"}).status_code == 403
    assert not guest.files and not guest.requests


def test_it_downloads_a_file_by_its_path(browser, vm, guest):
    guest.files["/etc/hostname"] = b"vm0\n"
    response = browser.post(f"/vms/{vm.pk}/download/", {"path": "/etc/hostname"})
    assert response["Content-Disposition"] == 'attachment; filename="hostname"'
    assert b"".join(response.streaming_content) == b"vm0\n"


@pytest.mark.parametrize(("path", "said"), [
    ("/missing/f", "not downloaded: in the guest"), ("/root/secret", "the guest refused it"),
    ("relative", "must be an absolute path"),
])
def test_a_refused_download_is_a_message(browser, vm, path, said):
    response = browser.post(f"/vms/{vm.pk}/download/", {"path": path}, follow=True)
    assert any(said in m for m in _messages(response)), _messages(response)


def test_each_way_in_through_the_portal_is_one_audit_event_without_the_content(browser, alice, vm, guest):
    from audit.models import AuditEvent

    guest.files["/etc/hostname"] = b"guest-name\n"
    browser.post(f"/vms/{vm.pk}/run/", {"command": "echo -pSECRET"}, REMOTE_ADDR="192.0.2.5")
    upload = SimpleUploadedFile("notes.txt", b"private words")
    browser.post(f"/vms/{vm.pk}/upload/", {"path": "/tmp/", "file": upload})
    b"".join(browser.post(f"/vms/{vm.pk}/download/", {"path": "/etc/hostname"}).streaming_content)
    browser.post(f"/vms/{vm.pk}/download/", {"path": "/root/secret"})  # the guest refuses it
    verbs = ["vm.exec", "vm.file_put", "vm.file_get"]
    events = list(AuditEvent.objects.filter(verb__in=verbs).order_by("pk"))
    assert [(e.verb, e.user, e.interface, e.object_id, e.result) for e in events] == [
        ("vm.exec", alice, "portal", str(vm.pk), "ok"), ("vm.file_put", alice, "portal", str(vm.pk), "ok"),
        ("vm.file_get", alice, "portal", str(vm.pk), "ok"),
        ("vm.file_get", alice, "portal", str(vm.pk), "refused")]
    assert events[0].address == "192.0.2.5"
    assert (events[0].detail["program"], events[0].detail["args"]) == ("echo", 2)
    assert events[1].detail["path"] == "/tmp/notes.txt" and events[3].detail["path"] == "/root/secret"
    text = str(list(AuditEvent.objects.values()))
    for secret in ("SECRET", "private words", "guest-name"):
        assert secret not in text
