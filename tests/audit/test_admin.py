"""The audit log in the admin: read only, even for a superuser; filtered; exported."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from audit.recording import record
from tests.admin_support import make_operator

LIST = reverse("admin:audit_auditevent_changelist")


@pytest.fixture
def event(alice):
    return record("token.create", by=alice, detail={"note": "x"})


def test_a_superuser_can_read_but_not_add_change_or_delete(client, event):
    make_operator(client)
    assert client.get(LIST).status_code == 200
    assert client.get(reverse("admin:audit_auditevent_change", args=[event.pk])).status_code == 200  # a view
    assert client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert client.post(reverse("admin:audit_auditevent_change", args=[event.pk]),
                       {"verb": "nothing.happened"}).status_code == 403
    assert client.get(reverse("admin:audit_auditevent_delete", args=[event.pk])).status_code == 403
    delete = reverse("admin:audit_auditevent_delete", args=[event.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    response = client.post(LIST, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})
    assert AuditEvent.objects.filter(pk=event.pk, verb="token.create").exists()
    assert response.status_code in (200, 302)


def test_it_filters_by_verb_and_user(client, alice, bob, event):
    record("login", by=bob)
    make_operator(client)
    shown = client.get(LIST, {"verb": "token.create"}).context["cl"].result_list
    assert [e.verb for e in shown] == ["token.create"]
    shown = client.get(LIST, {"user__id__exact": bob.pk}).context["cl"].result_list
    assert [e.username for e in shown] == ["bob"]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_it_exports_the_filtered_list(client, alice, bob, event, kind):
    record("login", by=bob)
    make_operator(client)
    response = client.get(reverse(f"admin:audit_auditevent_export_{kind}"), {"verb": "token.create"})
    assert response.status_code == 200
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    if kind == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert [(r["verb"], r["username"], r["detail"]) for r in rows] == [
            ("token.create", "alice", {"note": "x"})]
    else:
        header, *rows = text.splitlines()
        assert header.startswith("id,at,user_id,username")
        assert len(rows) == 1 and "token.create" in rows[0]


def test_the_export_action_exports_the_selected(client, alice, event):
    make_operator(client)
    response = client.post(LIST, {"action": "export_jsonl", "_selected_action": [event.pk], "index": "0"})
    assert response.status_code == 200
    assert json.loads(b"".join(response.streaming_content))["id"] == event.pk


def test_staff_without_the_permission_see_no_log(client, event):
    from tests.conftest import make_staff

    client.force_login(make_staff("stan2"))
    assert client.get(LIST).status_code == 403
    assert client.get(reverse("admin:audit_auditevent_export_csv")).status_code == 403


def _export_links(page: str) -> dict[str, str]:
    """The export buttons above the list: {label: href}, hrefs unescaped."""
    import html
    import re

    return {label: html.unescape(href) for href, label in
            re.findall(r'<a href="([^"]*/export\.[a-z]+[^"]*)"[^>]*>(Export [^<]+)</a>', page)}


def test_the_list_shows_both_export_buttons_keeping_its_filters(client, alice, bob, event):
    record("login", by=bob)
    record("token.create", by=bob)
    make_operator(client)
    links = _export_links(client.get(LIST).content.decode())
    assert set(links) == {"Export CSV", "Export JSON lines"}
    assert links["Export CSV"].endswith("/admin/audit/auditevent/export.csv?")
    # Filtered by verb and user: each button exports what the list shows, whole.
    page = client.get(LIST, {"verb": "token.create", "user__id__exact": alice.pk}).content.decode()
    links = _export_links(page)
    for label in ("Export CSV", "Export JSON lines"):
        assert f"user__id__exact={alice.pk}" in links[label] and "verb=token.create" in links[label]
    text = b"".join(client.get(links["Export JSON lines"]).streaming_content).decode()
    rows = [json.loads(line) for line in text.splitlines()]
    assert [(r["verb"], r["username"]) for r in rows] == [("token.create", "alice")]
    header, *rows = b"".join(client.get(links["Export CSV"]).streaming_content).decode().splitlines()
    assert header.startswith("id,at,") and len(rows) == 1 and rows[0].startswith(f"{event.pk},")
