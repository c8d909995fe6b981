"""TT Portal settings: one file, every deployment choice read from TT_* variables.

Local defaults need nothing installed beyond the Python environment: SQLite and
django-q2's ORM broker. Production sets TT_DATABASE_URL, TT_SECRET_KEY,
TT_DEBUG=0 and TT_ALLOWED_HOSTS.
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ttportal.config import env_bool, env_database, env_int, env_list, env_ports, env_redis, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("TT_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("TT_DEBUG", True)
SECRET_KEY = env_str("TT_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("TT_SECRET_KEY must be set when TT_DEBUG is off")
    SECRET_KEY = "insecure-local-development-key-not-for-production"
ALLOWED_HOSTS = env_list("TT_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "django_htmx",
    "engines",
    "envs",
    "vms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "ttportal.api.JsonErrors",
]

# A failed CSRF check is a JSON error under /api/ like every other API refusal.
CSRF_FAILURE_VIEW = "ttportal.api.csrf_failure"

ROOT_URLCONF = "ttportal.urls"
WSGI_APPLICATION = "ttportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_SQLITE = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": VAR_DIR / "db.sqlite3",
    # Web server and task workers write from several processes: wait for the
    # lock instead of failing, take the write lock up front (no upgrade
    # deadlocks), and let readers proceed while a writer works (WAL).
    "OPTIONS": {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    },
    # A file, not memory, so tests with threads exercise real locking; one per
    # process so concurrent test runs never share it.
    "TEST": {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")},
}
DATABASES = {"default": env_database("TT_DATABASE_URL", _SQLITE)}
if DATABASES["default"]["ENGINE"] == _SQLITE["ENGINE"]:
    # A SQLite file named by URL (a second process on the same file, say) locks
    # and journals as the default one does.
    DATABASES["default"].setdefault("OPTIONS", {}).update(_SQLITE["OPTIONS"])
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"

# The portal's sign-in page (Django's auth views, templates/registration/).
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "envs:list"
LOGOUT_REDIRECT_URL = "login"

# --- TT policy -----------------------------------------------------------
# Long operations (create, start, stop, snapshot, apply, destroy) on one Env may
# not run more often than this (the seed's last_mgmt_timestamp rule).
TT_MGMT_COOLDOWN = env_int("TT_MGMT_COOLDOWN", 10, minimum=0)
TT_DEFAULT_ENV_LIFETIME = env_int("TT_DEFAULT_ENV_LIFETIME", 4 * 3600, minimum=60)
TT_MAX_ENV_LIFETIME = env_int("TT_MAX_ENV_LIFETIME", 7 * 24 * 3600, minimum=60)
if TT_DEFAULT_ENV_LIFETIME > TT_MAX_ENV_LIFETIME:
    raise ImproperlyConfigured(
        f"TT_DEFAULT_ENV_LIFETIME ({TT_DEFAULT_ENV_LIFETIME}) must not exceed "
        f"TT_MAX_ENV_LIFETIME ({TT_MAX_ENV_LIFETIME})"
    )
# As many as the create form takes (VmRowFormSet max_num); node capacity is checked as well.
TT_MAX_VMS_PER_ENV = env_int("TT_MAX_VMS_PER_ENV", 100, minimum=1)
# Where a local node keeps its storage pools and guests' serial console logs.
TT_POOL_DIR = Path(env_str("TT_POOL_DIR", "/var/lib/ttportal/pools"))
TT_CONSOLE_DIR = Path(env_str("TT_CONSOLE_DIR", "/var/log/ttportal/console"))
# How long a guest gets for an ACPI shutdown before it is forced off.
TT_STOP_TIMEOUT = env_int("TT_STOP_TIMEOUT", 30, minimum=0)
# Firecracker's own API contract (OpenAPI), against which the Firecracker driver's
# request shapes are checked (tests/engines/firecracker).
TT_FIRECRACKER_SPEC = Path(env_str(
    "TT_FIRECRACKER_SPEC", str(BASE_DIR.parent / "shared" / "firecracker" / "firecracker-v1.16.1.yaml")))
# What VMs may reach on their node's host besides DHCP and DNS (a package cache,
# say): protocol:port pairs. Everything else listening on the host is closed to them.
TT_VM_HOST_PORTS = env_ports("TT_VM_HOST_PORTS")
# The busybox test template's UNAUTHENTICATED root shell on TCP 23 (the tests drive
# guests through it). 0 builds the template without it.
TT_TEMPLATE_TEST_SHELL = env_bool("TT_TEMPLATE_TEST_SHELL", True)
# Allocation retries when two requests race for the same MAC or port.
TT_ALLOCATION_RETRIES = env_int("TT_ALLOCATION_RETRIES", 50, minimum=1)

# --- Operations that survive crashes (envs/runner.py, envs/recovery.py) ----
# A running operation's worker renews its lease every TT_OPERATION_LEASE / 6 s;
# one not renewed for TT_OPERATION_LEASE s (or whose worker is gone from this
# host) is taken over. After TT_OPERATION_MAX_ATTEMPTS takes it fails as
# worker_lost, with every VM it touched settled to its real state.
TT_OPERATION_LEASE = env_int("TT_OPERATION_LEASE", 30, minimum=3)
TT_OPERATION_MAX_ATTEMPTS = env_int("TT_OPERATION_MAX_ATTEMPTS", 3, minimum=1)
# SIGTERM to the cluster (tt_qcluster): the operation in hand gets this long to
# finish, then it is handed back to be taken over at once.
TT_WORKER_STOP_TIMEOUT = env_int("TT_WORKER_STOP_TIMEOUT", 15, minimum=0)
# Domains and volumes named like ours that no live VM owns are reported as
# drift at once, and removed once they have been reported this long.
TT_DRIFT_GRACE = env_int("TT_DRIFT_GRACE", 3600, minimum=0)

# --- Task queue (django-q2) ------------------------------------------------
# `retry` must exceed `timeout`, or a slow task is handed to a second worker
# while the first still runs it. The broker's redelivery is not what recovers
# a lost operation (it takes `retry` seconds, and the Redis broker has none):
# operation leases do (envs/recovery.py).
_TASK_TIMEOUT = env_int("TT_TASK_TIMEOUT", 900, minimum=10)
Q_CLUSTER = {
    "name": "ttportal",
    "workers": env_int("TT_Q_WORKERS", 2, minimum=1),
    "recycle": 500,
    "timeout": _TASK_TIMEOUT,
    "retry": _TASK_TIMEOUT + 120,
    "max_attempts": 3,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.5,
    "ack_failures": True,
    "label": "Task queue",
    "sync": env_bool("TT_Q_SYNC", False),
}
_redis = env_redis("TT_REDIS_URL")
if _redis:
    Q_CLUSTER["redis"] = _redis["url"]
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("TT_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- REST API (issue 4) ----------------------------------------------------
INSTALLED_APPS += [
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "knox",
    "accounts",
]
# API tokens: knox's hashed tokens, in our own model (a name, a public id and
# the time of last use on top of knox's digest, owner, created and expiry).
KNOX_TOKEN_MODEL = "accounts.ApiToken"
# knox's own migrations create its AuthToken table even when the model is swapped
# out; that orphan table's foreign key to auth_user then breaks flushing the
# database on PostgreSQL. Nothing uses it: skip them.
MIGRATION_MODULES = {"knox": None}
TT_API_TOKEN_DEFAULT_TTL = env_int("TT_API_TOKEN_DEFAULT_TTL", 30 * 24 * 3600, minimum=60)
TT_API_TOKEN_MAX_TTL = env_int("TT_API_TOKEN_MAX_TTL", 365 * 24 * 3600, minimum=60)
REST_KNOX = {
    # A recognisable prefix lets secret scanners spot a leaked token.
    "TOKEN_PREFIX": "ttp_",
    "AUTH_HEADER_PREFIX": "Token",
}
REST_FRAMEWORK = {
    # Token first: an anonymous request then gets 401 with WWW-Authenticate.
    # Session auth (with DRF's CSRF check) lets the signed-in browser use the API.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "ttportal.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "ttportal.api_query.SingleValued",
        "django_filters.rest_framework.DjangoFilterBackend",
        "ttportal.api_query.StrictOrdering",
    ],
    "DEFAULT_SCHEMA_CLASS": "ttportal.api_schema.AutoSchema",
    "EXCEPTION_HANDLER": "ttportal.api.exception_handler",
    # JSON only: one request format to validate, document and test.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TT Portal API",
    "DESCRIPTION": (
        "Short-lived environments of virtual machines. Long actions return 202 with an "
        "Operation; poll GET /api/operations/{id}/ for its progress. Every error body carries "
        "a stable `code`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # POST /api/tokens/ takes a password (accounts.api.TokenViewSet), declared there.
    "APPEND_COMPONENTS": {"securitySchemes": {"basicAuth": {
        "type": "http", "scheme": "basic", "description": "Username and password (only to create a token).",
    }}},
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "EnvStatusEnum": "envs.models.Env.Status",
        "VmStatusEnum": "vms.models.Vm.Status",
        "SnapshotStatusEnum": "vms.models.Snapshot.Status",
        "OperationStatusEnum": "envs.models.Operation.Status",
        "OperationKindEnum": "envs.models.Operation.Kind",
        "EngineKindEnum": "engines.models.EngineKind",
    },
}
