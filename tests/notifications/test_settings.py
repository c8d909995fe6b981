"""The notification settings: validated at start-up (a wrong value names its variable),
mapped to Django's email settings, and the SMTP password never shown."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.views.debug import SafeExceptionReporterFilter

from notifications.channels import email
from tests.ttportal.test_settings import ROOT, start_django


@pytest.mark.parametrize(("name", "value", "message"), [
    ("TT_EXPIRY_WARNINGS", "soon", "TT_EXPIRY_WARNINGS must list numbers of seconds of at least 60"),
    ("TT_EXPIRY_WARNINGS", "3600,30", "TT_EXPIRY_WARNINGS must list numbers of seconds of at least 60"),
    ("TT_EXPIRY_WARNINGS", "600,600", "TT_EXPIRY_WARNINGS lists a number twice"),
    ("TT_EXPIRY_WARNINGS", "-600", "TT_EXPIRY_WARNINGS must list numbers"),
    ("TT_EMAIL_PORT", "smtp", "TT_EMAIL_PORT must be an integer"),
    ("TT_EMAIL_PORT", "70000", "TT_EMAIL_PORT must be at most 65535"),
    ("TT_EMAIL_BACKEND", "postfix", "TT_EMAIL_BACKEND must be smtp, console"),
    ("TT_EMAIL_USE_TLS", "maybe", "TT_EMAIL_USE_TLS must be a boolean"),
    ("TT_PUBLIC_URL", "tt.example.com", "TT_PUBLIC_URL must be a URL"),
    ("TT_NOTIFY_MAX_ATTEMPTS", "0", "TT_NOTIFY_MAX_ATTEMPTS must be at least 1"),
])
def test_it_refuses_a_bad_variable_by_name(name, value, message):
    result = start_django(**{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_it_refuses_tls_and_ssl_together():
    result = start_django(TT_EMAIL_USE_TLS="1", TT_EMAIL_USE_SSL="1")
    assert result.returncode != 0
    assert "TT_EMAIL_USE_TLS (STARTTLS) and TT_EMAIL_USE_SSL" in result.stderr


def test_it_maps_the_variables_to_djangos_email_settings():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.TT_EXPIRY_WARNINGS, s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, "
        "s.EMAIL_USE_TLS, s.DEFAULT_FROM_EMAIL, s.TT_PUBLIC_URL, sep='|')"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(DJANGO_SETTINGS_MODULE="ttportal.settings", TT_VAR_DIR=str(ROOT / "var"),
               TT_EXPIRY_WARNINGS="600, 7200,1800", TT_EMAIL_BACKEND="smtp", TT_EMAIL_HOST="mail.example.com",
               TT_EMAIL_PORT="587", TT_EMAIL_HOST_USER="tt", TT_EMAIL_HOST_PASSWORD="hunter2",
               TT_EMAIL_USE_TLS="1", TT_DEFAULT_FROM_EMAIL="TT <tt@example.com>",
               TT_PUBLIC_URL="https://tt.example.com/")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip().split("|") == [
        "(7200, 1800, 600)", "django.core.mail.backends.smtp.EmailBackend", "mail.example.com", "587", "tt",
        "True", "TT <tt@example.com>", "https://tt.example.com",
    ], out.stderr
    assert "hunter2" not in out.stdout + out.stderr


def test_it_defaults_to_the_console_backend_and_warnings_at_1_h_and_10_min():
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.EMAIL_BACKEND, s.TT_EXPIRY_WARNINGS)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(DJANGO_SETTINGS_MODULE="ttportal.settings", TT_VAR_DIR=str(ROOT / "var"))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "django.core.mail.backends.console.EmailBackend (3600, 600)", out.stderr


def test_an_empty_list_turns_the_warnings_off():
    assert start_django(TT_EXPIRY_WARNINGS="").returncode == 0


def test_the_password_is_never_shown(settings):
    settings.EMAIL_HOST_PASSWORD = "hunter2"
    # Django's error pages list settings through this filter.
    assert SafeExceptionReporterFilter().get_safe_settings()["EMAIL_HOST_PASSWORD"] != "hunter2"
    # An error that quotes it (a backend that echoes its login) is recorded without it.
    assert email.redact("535 login tt:hunter2 refused") == "535 login tt:******** refused"
