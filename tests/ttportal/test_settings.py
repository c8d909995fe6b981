"""A wrong deployment variable stops start-up with a message naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def start_django(**env_vars) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(env_vars)
    env["TT_VAR_DIR"] = env.get("TT_VAR_DIR", str(ROOT / "var"))
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_it_starts_with_no_configuration():
    result = start_django()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TT_MGMT_COOLDOWN", "soon", "TT_MGMT_COOLDOWN must be an integer"),
        ("TT_MGMT_COOLDOWN", "-5", "TT_MGMT_COOLDOWN must be at least 0"),
        ("TT_MAX_ENV_LIFETIME", "1.5", "TT_MAX_ENV_LIFETIME must be an integer"),
        ("TT_DEFAULT_ENV_LIFETIME", "999999999", "TT_DEFAULT_ENV_LIFETIME"),
        ("TT_DATABASE_URL", "not a url", "TT_DATABASE_URL must be a database URL"),
        ("TT_DATABASE_URL", "nosuchdb://x/y", "TT_DATABASE_URL is not a valid database URL"),
        ("TT_DEBUG", "maybe", "TT_DEBUG must be a boolean"),
        ("TT_REDIS_URL", "localhost:6379", "TT_REDIS_URL must be a URL"),
        ("TT_RATE_EXTEND", "30", "TT_RATE_EXTEND must be a rate like 30/h"),
        ("TT_RATE_PEER", "0/h", "TT_RATE_PEER must be a rate like 30/h"),
        ("TT_RATE_TEST_NOTIFICATION", "1/week", "TT_RATE_TEST_NOTIFICATION must be a rate like 30/h"),
        ("TT_LOGIN_FAILURE_LIMIT", "0", "TT_LOGIN_FAILURE_LIMIT must be at least 1"),
        ("TT_VM_DENY_NETWORKS", "10.0.0.0/8,intranet", "TT_VM_DENY_NETWORKS must list networks"),
        ("TT_VM_ALLOW_NETWORKS", "10.1.2.0/33", "TT_VM_ALLOW_NETWORKS must list networks"),
        ("TT_DOCKER_EXEC", "fast", "TT_DOCKER_EXEC must be one of auto, api, runc"),
    ],
)
def test_it_refuses_a_bad_variable_by_name(name, value, message):
    result = start_django(**{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_it_requires_a_secret_key_without_debug():
    result = start_django(TT_DEBUG="0")
    assert result.returncode != 0
    assert "TT_SECRET_KEY must be set" in result.stderr


def test_it_reads_a_postgres_url():
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "d = settings.DATABASES['default']; print(d['ENGINE'], d['NAME'], d['HOST'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(
        TT_DATABASE_URL="postgres://tt@db.example:5432/ttportal", DJANGO_SETTINGS_MODULE="ttportal.settings"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["django.db.backends.postgresql", "ttportal", "db.example"], out.stderr


def test_it_reads_the_vm_networks_and_the_sites_services():
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print([str(n) for n in s.TT_VM_DENY_NETWORKS], [str(n) for n in s.TT_VM_ALLOW_NETWORKS], "
        "list(s.TT_SITE_SERVICE_HOSTS))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_")}
    env.update(TT_VM_DENY_NETWORKS="192.0.2.0/24, 2001:db8::/32", TT_VM_ALLOW_NETWORKS="10.20.30.40",
               TT_DATABASE_URL="postgres://tt@db.example:5432/ttportal", TT_REDIS_URL="redis://10.0.0.7:6379/0",
               DJANGO_SETTINGS_MODULE="ttportal.settings")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == ("['192.0.2.0/24', '2001:db8::/32'] ['10.20.30.40/32'] "
                                  "['10.0.0.7', 'db.example']"), out.stderr


@pytest.mark.parametrize("url, index, expected", [
    ("redis://127.0.0.1:6379/0", 0, "redis://127.0.0.1:6379/0"),
    ("redis://127.0.0.1:6379/0", 1, "redis://127.0.0.1:6379/1"),
    ("redis://127.0.0.1:6379/4", 2, "redis://127.0.0.1:6379/6"),
    ("redis://cache.example:6380", 1, "redis://cache.example:6380/1"),
    ("rediss://u:p@cache.example:6380/3/", 1, "rediss://u:p@cache.example:6380/4"),
])
def test_each_test_worker_takes_the_redis_database_after_the_one_before(url, index, expected):
    from ttportal.config import worker_redis_url

    assert worker_redis_url(url, index) == expected
