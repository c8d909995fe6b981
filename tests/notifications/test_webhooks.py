"""Webhooks against a real HTTP server on 127.0.0.1: the body and its signature, a retry
after a 500 (then delivered), none after a 400, giving up after the last attempt, the
addresses we refuse, and the URLs we take."""

from __future__ import annotations

from datetime import timedelta

import pytest

from notifications import services
from notifications.channels import webhook as channel
from notifications.models import Delivery, Webhook
from tests.support import T0
from ttportal import ratelimit
from ttportal.errors import ConflictingInput, InvalidInput

pytestmark = pytest.mark.usefixtures("frozen_clock")

MINUTE = timedelta(minutes=1)


@pytest.fixture
def hook(alice, receiver):
    hook, secret = services.webhook_create(user=alice, endpoint=receiver.url, name="ci")
    hook.shown_secret = secret
    return hook


def send_test(alice, hook, run_tasks) -> Delivery:
    with run_tasks():
        delivery = services.send_test_notification(user=alice, channel="webhook", webhook=hook)
    delivery.refresh_from_db()
    return delivery


def test_it_posts_a_signed_json_body(alice, hook, receiver, run_tasks):
    delivery = send_test(alice, hook, run_tasks)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 1, 204)
    assert delivery.delivered_at == T0
    (request,) = receiver.received
    assert request.path == "/hooks/tt"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-TT-Event"] == "test"
    assert request.headers["X-TT-Delivery"] == str(delivery.pk)
    assert request.headers["X-TT-Timestamp"] == str(int(T0.timestamp()))
    assert request.signed_with(hook.shown_secret)
    assert not request.signed_with("whsec_not-the-secret")
    body = request.json
    assert body["event"] == "test" and body["delivery"] == delivery.pk and body["user"] == "alice"
    assert body["channel"] == "webhook ci"
    # The secret is what the receiver checks with; the webhook's row keeps it to sign.
    assert Webhook.objects.get().secret == hook.shown_secret
    assert hook.shown_secret.startswith("whsec_")


def test_the_signature_covers_the_timestamp(alice, hook, receiver, run_tasks):
    send_test(alice, hook, run_tasks)
    (request,) = receiver.received
    replayed = request.headers | {"X-TT-Timestamp": str(int(T0.timestamp()) + 3600)}
    request.headers = replayed
    assert not request.signed_with(hook.shown_secret)


def test_it_retries_after_a_500_and_records_the_delivery(alice, hook, receiver, run_tasks, time_machine,
                                                          sweep):
    receiver.answers = [500, 204]
    delivery = send_test(alice, hook, run_tasks)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("retrying", 1, 500)
    assert delivery.last_error == "HTTP 500: answer 500"
    assert delivery.next_attempt_at == T0 + MINUTE  # TT_NOTIFY_RETRY_BASE
    sweep()  # not due yet
    assert len(receiver.received) == 1

    time_machine.move_to(T0 + MINUTE)
    sweep()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 2, 204)
    assert delivery.delivered_at == T0 + MINUTE
    first, second = receiver.received
    assert first.body == second.body  # the same body, signed again at its own time
    assert first.headers["X-TT-Delivery"] == second.headers["X-TT-Delivery"]
    assert second.headers["X-TT-Timestamp"] == str(int((T0 + MINUTE).timestamp()))
    assert first.signed_with(hook.shown_secret) and second.signed_with(hook.shown_secret)
    time_machine.move_to(T0 + 60 * MINUTE)
    sweep()
    assert len(receiver.received) == 2


def test_it_does_not_retry_after_a_400(alice, hook, receiver, run_tasks, time_machine, sweep):
    receiver.answers = [400]
    delivery = send_test(alice, hook, run_tasks)
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 400)
    assert delivery.last_error == "HTTP 400: answer 400"
    time_machine.move_to(T0 + 120 * MINUTE)
    sweep()
    assert len(receiver.received) == 1


def test_it_retries_a_429_with_exponential_backoff_then_gives_up(alice, hook, receiver, run_tasks, settings,
                                                                  time_machine, sweep):
    settings.TT_NOTIFY_MAX_ATTEMPTS = 3
    receiver.answers = [429, 503, 502]
    delivery = send_test(alice, hook, run_tasks)
    assert delivery.next_attempt_at == T0 + MINUTE
    time_machine.move_to(T0 + MINUTE)
    sweep()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("retrying", 2)
    assert delivery.next_attempt_at == T0 + 3 * MINUTE  # twice the wait
    time_machine.move_to(T0 + 3 * MINUTE)
    sweep()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.last_error == "HTTP 502: answer 502 (gave up after 3 attempts)"
    time_machine.move_to(T0 + 60 * MINUTE)
    sweep()
    assert len(receiver.received) == 3


def test_it_retries_when_nobody_listens(alice, receiver, run_tasks):
    hook, _ = services.webhook_create(user=alice, endpoint="http://127.0.0.1:9/nothing-here")
    delivery = send_test(alice, hook, run_tasks)
    assert (delivery.status, delivery.attempts) == ("retrying", 1)
    assert "ConnectionRefusedError" in delivery.last_error


def test_two_tasks_for_one_delivery_send_it_once(alice, hook, receiver, run_tasks):
    delivery = send_test(alice, hook, run_tasks)
    services.deliver(delivery.pk)
    services.deliver(delivery.pk)
    assert len(receiver.received) == 1


def test_a_deleted_webhook_gets_nothing(alice, hook, receiver, sweep, time_machine):
    # Queued, not yet sent.
    delivery = services.send_test_notification(user=alice, channel="webhook", webhook=hook)
    services.webhook_delete(webhook=hook, by=alice)
    time_machine.move_to(T0 + 10 * MINUTE)
    sweep()  # its task was lost: the sweep sends it again
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_error, delivery.target) == (
        "failed", "the webhook was deleted", hook.endpoint)
    assert receiver.received == []


# --- where we send --------------------------------------------------------------------------


def test_it_refuses_private_addresses_unless_allowed(alice, settings):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = False
    for url in ("http://127.0.0.1/", "http://10.1.2.3:8080/x", "http://localhost/", "http://[::1]/",
                "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(ConflictingInput) as refused:
            services.webhook_create(user=alice, endpoint=url)
        assert refused.value.field == "endpoint"
        assert "must be a public address" in refused.value.message
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True
    services.webhook_create(user=alice, endpoint="http://10.1.2.3:8080/x")


def test_it_checks_the_address_a_name_resolves_to_when_sending(alice, receiver, settings, run_tasks):
    named, _ = services.webhook_create(user=alice, endpoint=f"http://localhost:{receiver.port}/x")
    settings.TT_WEBHOOK_ALLOW_PRIVATE = False  # the operators changed their mind since
    delivery = send_test(alice, named, run_tasks)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert "must be a public address, and 127.0.0.1 is not" in delivery.last_error
    assert receiver.received == []


def test_it_never_sends_into_a_vm_network(alice, node, settings, receiver, run_tasks):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True
    with pytest.raises(ConflictingInput) as refused:
        services.webhook_create(user=alice, endpoint="http://10.100.3.4/")
    assert "VM network" in refused.value.message


# IPv4 hidden in IPv6, each form with a private IPv4 inside; and IPv6 ranges of a site's own.
HIDDEN_IPV4 = [
    ("http://[::127.0.0.1]/", "127.0.0.1"),                    # IPv4-compatible
    ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),               # IPv4-mapped
    ("http://[::ffff:169.254.169.254]/", "169.254.169.254"),   # cloud metadata, mapped
    ("http://[64:ff9b::7f00:1]/", "127.0.0.1"),                # NAT64
    ("http://[64:ff9b::a01:203]/", "10.1.2.3"),                # NAT64, RFC 1918
    ("http://[2002:7f00:1::1]/", "127.0.0.1"),                 # 6to4
    ("http://[2002:c0a8:101::1]/", "192.168.1.1"),             # 6to4, RFC 1918
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "192.0.2.45"),  # Teredo (its client)
]


@pytest.mark.parametrize(("url", "inner"), HIDDEN_IPV4, ids=[url for url, _ in HIDDEN_IPV4])
def test_it_judges_the_ipv4_an_ipv6_address_carries(alice, settings, url, inner):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = False
    with pytest.raises(ConflictingInput) as refused:
        services.webhook_create(user=alice, endpoint=url)
    assert refused.value.field == "endpoint"
    assert f"carries the IPv4 address {inner}" in refused.value.message
    assert not Webhook.objects.exists()


def test_it_refuses_hidden_ipv4_of_a_vm_network_or_a_node_even_with_private_allowed(alice, node, settings):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True
    for url, why in (("http://[::ffff:10.100.3.4]/", "VM network"),      # the node's VM network
                     ("http://[64:ff9b::a64:304]/", "VM network"),
                     ("http://[::ffff:203.0.113.10]/", "node of this site"),  # its public host
                     ("http://203.0.113.10:8080/", "node of this site")):
        with pytest.raises(ConflictingInput) as refused:
            services.webhook_create(user=alice, endpoint=url)
        assert why in refused.value.message, url
    assert not Webhook.objects.exists()


def test_it_refuses_a_nodes_engine_host(alice, node, settings):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True
    node.uri = "qemu+ssh://tt@192.0.2.77/system"
    node.save()
    with pytest.raises(ConflictingInput) as refused:
        services.webhook_create(user=alice, endpoint="https://192.0.2.77/")
    assert "node of this site (192.0.2.77)" in refused.value.message


@pytest.mark.parametrize("allow_private", [False, True])
def test_it_refuses_site_local_ipv6(alice, settings, allow_private):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = allow_private
    for url in ("http://[fec0::1]/", "http://[feff:ffff::1]/", "http://[64:ff9b:1::a01:203]/"):
        with pytest.raises(ConflictingInput) as refused:
            services.webhook_create(user=alice, endpoint=url)
        assert "is a site's own range" in refused.value.message, url


def test_it_takes_a_global_ipv6_address_and_a_nat64_one_of_a_public_ipv4(alice, settings):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = False
    for url in ("https://[2001:4860:4860::8888]/hook", "https://[64:ff9b::808:808]/hook"):
        services.webhook_create(user=alice, endpoint=url)
    assert Webhook.objects.count() == 2


def test_it_refuses_a_name_that_also_resolves_inward_when_sending(alice, receiver, settings, run_tasks,
                                                                   monkeypatch):
    """DNS can change after the webhook was saved: every address is checked at delivery, and
    one refused address refuses the delivery (nothing is sent, even to the good ones)."""
    import socket

    hook, _ = services.webhook_create(user=alice, endpoint=f"http://hooks.example.com:{receiver.port}/x")
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True

    def resolve(host, port, *args, **kwargs):
        assert host == "hooks.example.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fec0::5", port, 0, 0))]

    monkeypatch.setattr(channel.socket, "getaddrinfo", resolve)
    delivery = send_test(alice, hook, run_tasks)
    assert delivery.status == "failed"
    assert "fec0::5" in delivery.last_error
    assert receiver.received == []

    def resolve_mapped(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:203.0.113.10", port, 0, 0))]

    from nodes.models import Node

    Node.objects.create(name="n2", uri="test:///default", public_host="203.0.113.10")
    monkeypatch.setattr(channel.socket, "getaddrinfo", resolve_mapped)
    ratelimit.clear()  # a second test notification within the minute: not what this test is about
    delivery = send_test(alice, hook, run_tasks)
    assert delivery.status == "failed"
    assert "carries the IPv4 address 203.0.113.10" in delivery.last_error
    assert receiver.received == []


@pytest.mark.parametrize(("url", "refusal"), [
    ("ftp://example.com/", InvalidInput),
    ("example.com/hook", InvalidInput),
    ("https://user:pw@example.com/", InvalidInput),
    ("https://example.com/#frag", InvalidInput),
    ("https://exa mple.com/", InvalidInput),
    ("https://example.com:99999/", ConflictingInput),
    ("https://example.com:0/", ConflictingInput),
    ("https://-bad-.example.com/", ConflictingInput),
    ("https://a..b/", ConflictingInput),
    ("http://0.0.0.0/", ConflictingInput),
    ("http://[f5]:91270/", ConflictingInput),
    ("http://[1.2.3.4]/", ConflictingInput),
])
def test_it_refuses_urls_it_does_not_send_to_naming_the_field(alice, url, refusal):
    with pytest.raises(refusal) as refused:
        services.webhook_create(user=alice, endpoint=url)
    assert type(refused.value) is refusal
    assert refused.value.field == "endpoint"
    assert not Webhook.objects.exists()


def test_it_names_webhooks_after_their_host_and_limits_them(alice, settings):
    settings.TT_WEBHOOK_ALLOW_PRIVATE = True
    first, _ = services.webhook_create(user=alice, endpoint="https://ci.example.com/a")
    second, _ = services.webhook_create(user=alice, endpoint="https://ci.example.com/b")
    assert (first.name, second.name) == ("ci.example.com", "ci.example.com (2)")
    with pytest.raises(ConflictingInput) as refused:
        services.webhook_create(user=alice, endpoint="https://x.example.com/", name="ci.example.com")
    assert refused.value.field == "name"
    for i in range(18):
        services.webhook_create(user=alice, endpoint=f"https://h{i}.example.com/")
    with pytest.raises(ConflictingInput) as refused:
        services.webhook_create(user=alice, endpoint="https://one-more.example.com/")
    assert "20 webhooks" in refused.value.message


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    assert channel.signature("s3cret", 1700000000, b'{"a":1}') == (
        "sha256=" + __import__("hmac").new(b"s3cret", b'1700000000.{"a":1}', "sha256").hexdigest())
