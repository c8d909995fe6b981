"""TT Portal settings: one file, every deployment choice read from TT_* variables.

Local defaults need nothing installed beyond the Python environment: SQLite and
django-q2's ORM broker. Production sets TT_DATABASE_URL, TT_SECRET_KEY,
TT_DEBUG=0 and TT_ALLOWED_HOSTS.
"""

import os
from datetime import timedelta
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from ttportal.config import (
    env_bool,
    env_choice,
    env_database,
    env_float,
    env_int,
    env_issuer_url,
    env_list,
    env_networks,
    env_origins,
    env_ports,
    env_rate,
    env_redis,
    env_seconds_list,
    env_secret,
    env_str,
    env_url,
    service_hosts,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("TT_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("TT_DEBUG", True)
# TT_SECRET_KEY, or TT_SECRET_KEY_FILE naming a file that holds it (what
# `./tt.sh run --production` generates in TT_VAR_DIR when neither is set).
SECRET_KEY = env_secret("TT_SECRET_KEY", "TT_SECRET_KEY_FILE")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "TT_SECRET_KEY must be set when TT_DEBUG is off (or TT_SECRET_KEY_FILE, a file holding it)")
    SECRET_KEY = "insecure-local-development-key-not-for-production"
ALLOWED_HOSTS = env_list("TT_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_q",
    "django_htmx",
    "audit",
    "operations",
    # The label `engines` with no models: only the migrations Node and NodeHeartbeat had
    # before they moved to `nodes` (see nodes/history). The engines package is not an app.
    "nodes.history",
    "nodes",
    "envs",
    "vms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Where the request comes from (interface, address, user agent), for the audit log.
    "audit.context.AuditContext",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "ttportal.api.JsonErrors",
    # Last, so it sees an exception first: a busy database is a 503, not JsonErrors' 500.
    "ttportal.busy.BusyDatabase",
]

# Last: it turns a locked-out login's answer into the lockout page (accounts/lockout.py).
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]

# A failed CSRF check is a JSON error under /api/ like every other API refusal.
CSRF_FAILURE_VIEW = "ttportal.api.csrf_failure"

ROOT_URLCONF = "ttportal.urls"
WSGI_APPLICATION = "ttportal.wsgi.application"
# Served over ASGI (uvicorn; gunicorn's uvicorn workers in production): Django for HTTP,
# Channels for the console's websocket (ttportal/asgi.py, vms/console.py).
ASGI_APPLICATION = "ttportal.asgi.application"

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
# Sleep when idle (envs/sleep.py, docs/guide/sleep.md): a new Env's idle_suspend when its
# request gives none (minutes; 0: never), how often each cluster reads its nodes' port
# counters (s), and the port of the waker each node's cluster serves on the node's gateway.
TT_IDLE_SUSPEND_DEFAULT_MIN = env_int("TT_IDLE_SUSPEND_DEFAULT_MIN", 0, minimum=0)
TT_IDLE_CHECK_SECONDS = env_int("TT_IDLE_CHECK_SECONDS", 60, minimum=1)
TT_WAKER_PORT = env_int("TT_WAKER_PORT", 7077, minimum=1)
if TT_DEFAULT_ENV_LIFETIME > TT_MAX_ENV_LIFETIME:
    raise ImproperlyConfigured(
        f"TT_DEFAULT_ENV_LIFETIME ({TT_DEFAULT_ENV_LIFETIME}) must not exceed "
        f"TT_MAX_ENV_LIFETIME ({TT_MAX_ENV_LIFETIME})"
    )
# As many as the create form takes (VmRowFormSet max_num); node capacity is checked as well.
TT_MAX_VMS_PER_ENV = env_int("TT_MAX_VMS_PER_ENV", 100, minimum=1)
# Forwarded ports one VM may have (a request's list, the API schema's maxItems); the
# owner's quota of ports (TT_QUOTA_PORTS) bounds all their VMs together.
TT_MAX_PORTS_PER_VM = env_int("TT_MAX_PORTS_PER_VM", 32, minimum=0)
# Blueprints (saved Env files, envs/blueprints.py) one user may keep.
TT_MAX_BLUEPRINTS_PER_USER = env_int("TT_MAX_BLUEPRINTS_PER_USER", 100, minimum=0)
# Where a local node keeps its storage pools and guests' serial console logs.
TT_POOL_DIR = Path(env_str("TT_POOL_DIR", "/var/lib/ttportal/pools"))
TT_CONSOLE_DIR = Path(env_str("TT_CONSOLE_DIR", "/var/log/ttportal/console"))
# How long a guest gets for an ACPI shutdown before it is forced off.
TT_STOP_TIMEOUT = env_int("TT_STOP_TIMEOUT", 30, minimum=0)
# Saved VMs whose restore a libvirt node on this host keeps launched ahead (parked), at most;
# each holds ~50 MB and one of libvirtd's worker threads (engines/libvirt/parking.py). 0: none.
TT_PARK_MAX = env_int("TT_PARK_MAX", 16, minimum=0)
# Firecracker's own API contract (OpenAPI), against which the Firecracker driver's
# request shapes are checked (tests/engines/firecracker).
TT_FIRECRACKER_SPEC = Path(env_str(
    "TT_FIRECRACKER_SPEC", str(BASE_DIR / "engines/firecracker/contract/firecracker-v1.16.1.yaml")))
# What VMs may reach on their node's host besides DHCP and DNS (a package cache,
# say): protocol:port pairs. Everything else listening on the host is closed to them.
TT_VM_HOST_PORTS = env_ports("TT_VM_HOST_PORTS")
# Forwarded traffic from VMs never reaches an address that is not global (private, CGNAT,
# link-local, loopback, documentation, benchmarking, multicast, reserved; IPv6 alike), any
# node's address, or the site's database and Redis (engines.network.addresses). The operator
# denies more networks, and opens exceptions (an internal package mirror) that beat every
# denial but a VM network's isolation. CIDRs, comma-separated.
TT_VM_DENY_NETWORKS = env_networks("TT_VM_DENY_NETWORKS", "")
TT_VM_ALLOW_NETWORKS = env_networks("TT_VM_ALLOW_NETWORKS", "")
# The busybox test template's UNAUTHENTICATED root shell on TCP 23 (the tests drive
# guests through it). 0 builds the template without it.
TT_TEMPLATE_TEST_SHELL = env_bool("TT_TEMPLATE_TEST_SHELL", True)
# Allocation retries when two requests race for the same MAC or port.
TT_ALLOCATION_RETRIES = env_int("TT_ALLOCATION_RETRIES", 50, minimum=1)
# The Retry-After of a 503 database_busy (ttportal/busy.py): a lock held past the wait
# allowed (SQLite's timeout below, PostgreSQL's lock_timeout) or a deadlock victim.
TT_DATABASE_BUSY_RETRY_AFTER = env_int("TT_DATABASE_BUSY_RETRY_AFTER", 2, minimum=1)
# Placement (vms/placement.py): of the nodes that pass the filters (enabled, engine,
# features, free vCPUs, memory, public ports and addresses), "spread" picks the one
# with the most free memory (load shared out, the Nova/Incus default); "pack" the one
# with the least that still fits (nodes filled one by one, others left free). Either
# way an Env's VMs stay on one node while it has room.
TT_PLACEMENT = env_str("TT_PLACEMENT", "spread").strip().lower()
if TT_PLACEMENT not in ("spread", "pack"):
    raise ImproperlyConfigured(f"TT_PLACEMENT must be spread or pack, got {TT_PLACEMENT!r}")
# Disk (vms/placement.py: disk): what a node's VMs may take (disks, snapshots, saved
# memory) must fit in (capacity - reserve) x overcommit, and its real free space less the
# reserve must exceed what new VMs write at once. MiB kept free for the host (the
# database, logs, the engines' own files); the ratio above 1 lets thin disks be promised
# beyond the space (most guests never fill theirs).
TT_NODE_DISK_RESERVE = env_int("TT_NODE_DISK_RESERVE", 2048, minimum=0)
TT_NODE_DISK_OVERCOMMIT = env_float("TT_NODE_DISK_OVERCOMMIT", 1.0, minimum=0.1)

# --- Quotas (accounts/quotas.py) ---
# What one user may hold at once, and how long their Envs may live. Operators override
# any of them per user or per group in the admin; a user's limit is their own override,
# else the most generous of their groups', else these. 0 allows none.
TT_QUOTA_ENVS = env_int("TT_QUOTA_ENVS", 5, minimum=0)  # live Envs
TT_QUOTA_VMS = env_int("TT_QUOTA_VMS", 20, minimum=0)  # live VMs, in all Envs together
TT_QUOTA_VCPUS = env_int("TT_QUOTA_VCPUS", 16, minimum=0)  # of all live VMs
TT_QUOTA_MEM_MB = env_int("TT_QUOTA_MEM_MB", 16384, minimum=0)  # MiB, of all live VMs
TT_QUOTA_DISK_MB = env_int("TT_QUOTA_DISK_MB", 102400, minimum=0)  # MiB, of all live VMs
TT_QUOTA_SNAPSHOTS = env_int("TT_QUOTA_SNAPSHOTS", 50, minimum=0)  # of all live VMs
TT_QUOTA_PORTS = env_int("TT_QUOTA_PORTS", 64, minimum=0)  # forwarded public ports, of all live VMs
# Seconds an Env may live from its start, and the most one extension may move its end.
TT_QUOTA_MAX_LIFETIME = env_int("TT_QUOTA_MAX_LIFETIME", TT_MAX_ENV_LIFETIME, minimum=0)
TT_QUOTA_MAX_EXTENSION = env_int("TT_QUOTA_MAX_EXTENSION", min(24 * 3600, TT_MAX_ENV_LIFETIME), minimum=0)
for _name, _value in (("TT_QUOTA_MAX_LIFETIME", TT_QUOTA_MAX_LIFETIME),
                      ("TT_QUOTA_MAX_EXTENSION", TT_QUOTA_MAX_EXTENSION)):
    if _value > TT_MAX_ENV_LIFETIME:
        raise ImproperlyConfigured(
            f"{_name} ({_value}) must not exceed TT_MAX_ENV_LIFETIME ({TT_MAX_ENV_LIFETIME})"
        )

# --- Operations that survive crashes (operations/runner.py, operations/recovery.py) ----
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

# --- Several hosts (nodes/fleet.py) ----------------------------------------------
# Each node's task cluster beats every TT_NODE_BEAT s with what the node has free; a
# node with a cluster of its own that has not beaten for TT_NODE_DOWN_AFTER beats is
# down: nothing is placed there and its queued operations fail as node_down.
TT_NODE_BEAT = env_int("TT_NODE_BEAT", 10, minimum=1)
# Warm pools (vms/warm.py): how long a spare's guest may take to say it is up before
# the spare is discarded.
TT_WARM_BOOT_TIMEOUT = env_int("TT_WARM_BOOT_TIMEOUT", 180, minimum=5)
TT_NODE_DOWN_AFTER = env_int("TT_NODE_DOWN_AFTER", 3, minimum=2)

# --- Task queue (django-q2) ------------------------------------------------
# `retry` must exceed `timeout`, or a slow task is handed to a second worker
# while the first still runs it. The broker's redelivery is not what recovers
# a lost operation (it takes `retry` seconds, and the Redis broker has none):
# operation leases do (operations/recovery.py).
_TASK_TIMEOUT = env_int("TT_TASK_TIMEOUT", 900, minimum=10)
# One name for the whole site (the default cluster: web-side work and the sweeps);
# a node with a cluster of its own runs `tt_qcluster --cluster-name NODE` (its queue).
# django-q2 needs ALT_CLUSTERS present, even empty, or a named cluster fails at start-up.
Q_CLUSTER = {
    "name": "ttportal",
    "ALT_CLUSTERS": {},
    "workers": env_int("TT_Q_WORKERS", 2, minimum=1),
    "recycle": 500,
    "timeout": _TASK_TIMEOUT,
    "retry": _TASK_TIMEOUT + 120,
    "max_attempts": 3,
    "catch_up": False,
    "save_limit": 1000,
    # The ORM broker looks for new tasks this often when its queue is empty (ms; Redis
    # blocks instead): it is the pick-up latency of every operation, a warm create's too.
    "poll": env_int("TT_Q_POLL_MS", 50, minimum=10) / 1000,
    "ack_failures": True,
    "label": "Task queue",
    "sync": env_bool("TT_Q_SYNC", False),
}
_redis = env_redis("TT_REDIS_URL")
# The site's own services, closed to VMs whatever network they are on (resolved when a
# node's firewall is built).
TT_SITE_SERVICE_HOSTS = service_hosts(DATABASES["default"], _redis)
if _redis:
    Q_CLUSTER["redis"] = _redis["url"]
else:
    Q_CLUSTER["orm"] = "default"

# --- The live console (vms/console.py) ----------------------------------------------
# Channels' layer carries a console between its hub (the web process holding the engine's
# stream) and its viewers: with TT_REDIS_URL, Redis, so a viewer served by another web
# process (gunicorn's workers, another host) shares the console too; without, each process's
# memory, which reaches its own viewers only (a single-process `./tt.sh run` needs no more).
CHANNEL_LAYERS = {"default": (
    {"BACKEND": "channels_redis.core.RedisChannelLayer",
     # Room for a burst of console output (a boot log) before a slow viewer drops some.
     "CONFIG": {"hosts": [_redis["url"]], "prefix": "tt-channels", "capacity": 1000, "expiry": 30}}
    if _redis else
    {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000, "expiry": 30}}
)}
# A console nobody typed into for this long is closed (seconds); its viewers with it.
TT_CONSOLE_IDLE_TIMEOUT = env_int("TT_CONSOLE_IDLE_TIMEOUT", 15 * 60, minimum=10)
# At most this many consoles open at once by one user (all VMs together), per web process;
# and at most TT_RATE_CONSOLE opened (below, with the other rates).
TT_CONSOLE_MAX_SESSIONS = env_int("TT_CONSOLE_MAX_SESSIONS", 5, minimum=1)

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
    "DEFAULT_PARSER_CLASSES": ["ttportal.parsers.BoundedJSONParser"],  # DRF's, nesting bounded
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
        "VmStatusEnum": "vms.serializers.SHOWN_STATUSES",  # with unknown (node down)
        "StartKindEnum": "vms.models.StartKind",
        "SnapshotStatusEnum": "vms.models.Snapshot.Status",
        "OperationStatusEnum": "operations.models.Operation.Status",
        "OperationKindEnum": "operations.registry.kind_choices",  # every app's kinds
        "EngineKindEnum": "nodes.models.EngineKind",
        "MemberRoleEnum": "envs.models.EnvMember.Role",
        "EnvRoleEnum": "envs.models.ENV_ROLES",  # the member roles and "owner"
    },
}

# --- Limits on what one user may do (ttportal/ratelimit.py) --------------------------
# Rates like "30/h" (at most 30 in any hour; per s, m, h or d), or "off". They bound each
# non-staff user whatever interface they use (portal, API, notification links); a refusal
# is rate_limited: a 429 with Retry-After in the API, a message in the portal.
TT_RATE_EXTEND = env_rate("TT_RATE_EXTEND", "30/h")  # Env extensions
TT_RATE_PEER = env_rate("TT_RATE_PEER", "30/h")  # peer and unpeer requests together
TT_RATE_TOKEN_CREATE = env_rate("TT_RATE_TOKEN_CREATE", "20/h")  # new API tokens
TT_RATE_TEST_NOTIFICATION = env_rate("TT_RATE_TEST_NOTIFICATION", "1/m")  # per channel (email, webhook)
TT_RATE_EXEC = env_rate("TT_RATE_EXEC", "120/m")  # commands run in guests (vms/guest_access.py)
TT_RATE_FILES = env_rate("TT_RATE_FILES", "120/m")  # files copied to or from guests, directories listed
# A non-staff user may have at most this many commands running in guests at once; 0: no limit.
TT_MAX_EXECS_PER_USER = env_int("TT_MAX_EXECS_PER_USER", 4, minimum=0)
# The largest file one request may copy to or from a guest, in MiB: an upload declaring more is
# refused (413) before anything reaches the guest.
TT_FILE_MAX_MB = env_int("TT_FILE_MAX_MB", 256, minimum=1)
TT_RATE_CONSOLE = env_rate("TT_RATE_CONSOLE", "60/h")  # consoles opened (portal and API)
# How a command reaches a container of a docker node whose podman runs on this host: "runc"
# runs `runc exec` directly (faster, the same confinement: engines/docker/runc_exec.py),
# "api" always goes through podman's exec API, "auto" uses runc where it applies.
TT_DOCKER_EXEC = env_choice("TT_DOCKER_EXEC", "auto", ("auto", "api", "runc"))
# The audit log (docs/guide/audit.md): events are kept this many days, then pruned daily.
TT_AUDIT_RETENTION_DAYS = env_int("TT_AUDIT_RETENTION_DAYS", 365, minimum=1)
if TT_AUDIT_RETENTION_DAYS > 36500:
    raise ImproperlyConfigured("TT_AUDIT_RETENTION_DAYS must be at most 36500 (100 years)")
# Off only to measure what the audit costs (bench/audit_cost.py): never in production.
TT_AUDIT_ENABLED = env_bool("TT_AUDIT_ENABLED", True)
# At most this many unexpired API tokens per user (staff too); 0: no limit.
TT_MAX_TOKENS_PER_USER = env_int("TT_MAX_TOKENS_PER_USER", 50, minimum=0)
# A non-staff user may have at most this many operations queued or running at once; 0: no limit.
TT_MAX_QUEUED_OPERATIONS_PER_USER = env_int("TT_MAX_QUEUED_OPERATIONS_PER_USER", 20, minimum=0)
# The counts live in the "limits" cache, shared by every web process: Redis when TT_REDIS_URL is
# set, else a table of the database (created by `manage.py createcachetable`). Django's default
# local-memory cache is per process: behind gunicorn's workers each would count on its own.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "limits": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _redis["url"],
         "KEY_PREFIX": "tt"}
        if _redis else
        {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "tt_limits_cache"}
    ),
}

# --- Failed logins (django-axes; accounts/lockout.py) -------------------------------
# The portal's sign-in, the admin's and POST /api/tokens/ (Basic auth) all go through
# django.contrib.auth.authenticate(request=...), which axes watches. After
# TT_LOGIN_FAILURE_LIMIT failures for one account (from anywhere), or
# TT_LOGIN_ADDRESS_FAILURE_LIMIT from one client address (any accounts), within
# TT_LOGIN_LOCKOUT seconds, that account or address is refused, the right password
# included, until TT_LOGIN_LOCKOUT seconds after its last failure, or until an operator
# deletes its access attempts in the admin (Axes > Access attempts).
TT_LOGIN_FAILURE_LIMIT = env_int("TT_LOGIN_FAILURE_LIMIT", 5, minimum=1)
TT_LOGIN_ADDRESS_FAILURE_LIMIT = env_int("TT_LOGIN_ADDRESS_FAILURE_LIMIT", 20, minimum=1)
TT_LOGIN_LOCKOUT = env_int("TT_LOGIN_LOCKOUT", 900, minimum=1)
INSTALLED_APPS += ["axes"]
# Axes first: it refuses a locked-out account before any backend checks the password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Under TT_OIDC_ONLY, refuses every password but the break-glass accounts' (single sign-on, below).
    "accounts.oidc.PasswordGate",
    "django.contrib.auth.backends.ModelBackend",
    # Single sign-on (below): answers only the OpenID Connect callback, and only when configured.
    "accounts.oidc.OidcBackend",
]
AXES_FAILURE_LIMIT = TT_LOGIN_FAILURE_LIMIT
# Separate criteria: the account's failures and the address's failures each lock.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_COOLOFF_TIME = timedelta(seconds=TT_LOGIN_LOCKOUT)
# The address limit of its own, and the time of the last failure, is ours (accounts/lockout.py).
AXES_HANDLER = "accounts.lockout.LoginFailures"
# The client's address as ttportal.proxy tells it (X-Forwarded-For only from TT_TRUSTED_PROXIES).
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_ip"
# A page (the API: a JSON 429) saying until when, with Retry-After.
AXES_LOCKOUT_CALLABLE = "accounts.lockout.locked_out_response"
AXES_HTTP_RESPONSE_CODE = 429
# Tries while locked out do not push the end further: the time the page gives stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success does not wipe the failures: it would wipe its address's too, every account's.
AXES_RESET_ON_SUCCESS = False

# --- Single sign-on with OpenID Connect (accounts/oidc.py, docs/guide/sso.md) ------------
# Off unless TT_OIDC_ISSUER is set. The provider's endpoints come from its discovery document
# (TT_OIDC_ISSUER + /.well-known/openid-configuration, read when first needed and kept an
# hour), or each from its own variable, which wins over discovery.
TT_OIDC_ISSUER = env_issuer_url("TT_OIDC_ISSUER")
TT_OIDC_CLIENT_ID = env_str("TT_OIDC_CLIENT_ID", "").strip()
# Never logged or shown (Django's error pages hide settings named *SECRET*); or a file.
TT_OIDC_CLIENT_SECRET = env_secret("TT_OIDC_CLIENT_SECRET", "TT_OIDC_CLIENT_SECRET_FILE")
TT_OIDC_AUTHORIZATION_ENDPOINT = env_issuer_url("TT_OIDC_AUTHORIZATION_ENDPOINT")
TT_OIDC_TOKEN_ENDPOINT = env_issuer_url("TT_OIDC_TOKEN_ENDPOINT")
TT_OIDC_USERINFO_ENDPOINT = env_issuer_url("TT_OIDC_USERINFO_ENDPOINT")
TT_OIDC_JWKS_URI = env_issuer_url("TT_OIDC_JWKS_URI")
TT_OIDC_END_SESSION_ENDPOINT = env_issuer_url("TT_OIDC_END_SESSION_ENDPOINT")
TT_OIDC_SCOPES = " ".join(env_str("TT_OIDC_SCOPES", "openid email profile").split())
# The ID token's signature algorithm (checked against the provider's JWKS); never HS*.
TT_OIDC_SIGN_ALGO = env_str("TT_OIDC_SIGN_ALGO", "RS256").strip().upper()
# The claim naming the user's groups ("" : groups are not synced), and the prefix that marks
# the Django groups the provider manages: a claim value V puts the user in the existing group
# named PREFIX + V, and takes them out of every other PREFIX group, at each sign-in.
TT_OIDC_GROUPS_CLAIM = env_str("TT_OIDC_GROUPS_CLAIM", "groups").strip()
TT_OIDC_GROUPS_PREFIX = env_str("TT_OIDC_GROUPS_PREFIX", "oidc:")
# The claim a new user's username is made from (then the email's local part, then "user").
TT_OIDC_USERNAME_CLAIM = env_str("TT_OIDC_USERNAME_CLAIM", "preferred_username").strip()
# Only single sign-on: passwords refused on the portal, the admin and the API, but for the
# break-glass accounts (usernames) kept for when the provider is down.
TT_OIDC_ONLY = env_bool("TT_OIDC_ONLY", False)
TT_OIDC_BREAK_GLASS_USERS = env_list("TT_OIDC_BREAK_GLASS_USERS", [])
# Only accounts of these Google Workspace domains (the ID token's `hd` claim); empty: any.
TT_OIDC_HOSTED_DOMAINS = env_list("TT_OIDC_HOSTED_DOMAINS", [])
# The sign-in button says "Sign in with <this>".
TT_OIDC_PROVIDER_NAME = env_str("TT_OIDC_PROVIDER_NAME", "single sign-on").strip() or "single sign-on"
# Seconds the provider gets to answer each request (discovery, token, keys, user info).
TT_OIDC_TIMEOUT = env_int("TT_OIDC_TIMEOUT", 10, minimum=1)
if TT_OIDC_ISSUER and not (TT_OIDC_CLIENT_ID and TT_OIDC_CLIENT_SECRET):
    raise ImproperlyConfigured("TT_OIDC_ISSUER is set: TT_OIDC_CLIENT_ID and TT_OIDC_CLIENT_SECRET "
                               "(or TT_OIDC_CLIENT_SECRET_FILE) must be set too")
if TT_OIDC_ONLY and not TT_OIDC_ISSUER:
    raise ImproperlyConfigured("TT_OIDC_ONLY=1 needs single sign-on configured: set TT_OIDC_ISSUER")
if "openid" not in TT_OIDC_SCOPES.split():
    raise ImproperlyConfigured(f"TT_OIDC_SCOPES must include openid, got {TT_OIDC_SCOPES!r}")
_OIDC_ALGOS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
if TT_OIDC_SIGN_ALGO not in _OIDC_ALGOS:
    raise ImproperlyConfigured(f"TT_OIDC_SIGN_ALGO must be one of {', '.join(_OIDC_ALGOS)}, "
                               f"got {TT_OIDC_SIGN_ALGO!r}")
if not TT_OIDC_GROUPS_PREFIX.strip():
    raise ImproperlyConfigured("TT_OIDC_GROUPS_PREFIX must not be empty: it marks the groups the "
                               "provider manages (an empty one would hand it every group)")
# The login pages show the "Sign in with" button (accounts/oidc.py: sso).
TEMPLATES[0]["OPTIONS"]["context_processors"].append("accounts.oidc.sso")

# --- Notifications (notifications/) ------------------------------------------
INSTALLED_APPS += ["notifications"]
# Warn an Env's owner this many seconds before its end, largest first ("" for none).
# At least 60: the sweep that sends them runs once a minute.
TT_EXPIRY_WARNINGS = env_seconds_list("TT_EXPIRY_WARNINGS", (3600, 600), minimum=60)
# Where people reach the portal: the links in notifications (Env page, "extend by 1 h").
TT_PUBLIC_URL = env_url("TT_PUBLIC_URL", "http://127.0.0.1:8000")
# Email through Django's email backend. TT_EMAIL_BACKEND takes smtp, console (the
# default: printed to the log), locmem, dummy, or a backend's dotted path.
_EMAIL_BACKENDS = {
    name: f"django.core.mail.backends.{name}.EmailBackend" for name in ("smtp", "console", "locmem", "dummy")
}
_email_backend = env_str("TT_EMAIL_BACKEND", "console").strip()
EMAIL_BACKEND = _EMAIL_BACKENDS.get(_email_backend, _email_backend)
if "." not in EMAIL_BACKEND:
    raise ImproperlyConfigured(
        f"TT_EMAIL_BACKEND must be smtp, console, locmem, dummy or a dotted path, got {_email_backend!r}"
    )
EMAIL_HOST = env_str("TT_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("TT_EMAIL_PORT", 25, minimum=1)
if EMAIL_PORT > 65535:
    raise ImproperlyConfigured(f"TT_EMAIL_PORT must be at most 65535, got {EMAIL_PORT}")
EMAIL_HOST_USER = env_str("TT_EMAIL_HOST_USER", "")
# Never logged or shown: Django's error pages hide settings named *PASSWORD*, and a
# delivery's recorded error has it blanked out (notifications/channels/email.py).
EMAIL_HOST_PASSWORD = env_str("TT_EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("TT_EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("TT_EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("TT_EMAIL_USE_TLS (STARTTLS) and TT_EMAIL_USE_SSL (TLS from the start) "
                               "exclude each other: set one")
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = env_str("TT_DEFAULT_FROM_EMAIL", "TT Portal <tt-portal@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# A delivery that fails for a reason that may pass (a network error, an HTTP 5xx or
# 429, an SMTP 4xx) is tried again TT_NOTIFY_RETRY_BASE s later, then twice that,
# and so on, up to TT_NOTIFY_MAX_ATTEMPTS attempts in all.
TT_NOTIFY_MAX_ATTEMPTS = env_int("TT_NOTIFY_MAX_ATTEMPTS", 5, minimum=1)
TT_NOTIFY_RETRY_BASE = env_int("TT_NOTIFY_RETRY_BASE", 60, minimum=1)
# Seconds a webhook receiver gets to connect and answer.
TT_WEBHOOK_TIMEOUT = env_int("TT_WEBHOOK_TIMEOUT", 10, minimum=1)
# Webhooks are sent only to public addresses unless this is on (a receiver on the
# operators' own network). VM networks of the nodes are refused either way.
TT_WEBHOOK_ALLOW_PRIVATE = env_bool("TT_WEBHOOK_ALLOW_PRIVATE", False)
# The API's enums of notifications/, named in the schema.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update({
    "DeliveryStatusEnum": "notifications.models.Delivery.Status",
    "DeliveryChannelEnum": "notifications.models.Delivery.Channel",
    "NotificationEventEnum": "notifications.models.Notification.Kind",
})

# --- Production serving and metrics ------------------------------------------
# TT_DEBUG=0 (`./tt.sh run --production`) serves through gunicorn
# (ttportal/gunicorn_conf.py: TT_BIND, TT_WEB_WORKERS) behind a proxy that
# terminates TLS: docs/guide/production.md and docs/guide/metrics.md.
#
# The proxy must overwrite X-Forwarded-Proto and append to X-Forwarded-For; only
# these peers may send them (ttportal/proxy.py drops them from anyone else, and
# gunicorn's forwarded_allow_ips is the same list).
TT_TRUSTED_PROXIES = env_networks("TT_TRUSTED_PROXIES", "127.0.0.1/32,::1/128")
# Who may read /metrics without a staff session: the client's address, as the
# trusted proxies report it (a request through a proxy is never the proxy's own).
TT_METRICS_ALLOWED = env_networks("TT_METRICS_ALLOWED", "127.0.0.1/32,::1/128")
# A node's engine or firewall is asked (by /readyz, /metrics and the VM page) for at
# most this long, and its answer reused for this long, in each web process: a node
# that hangs costs a page a bounded wait, and a probe every few seconds costs the
# node nothing.
TT_NODE_PROBE_TIMEOUT = env_int("TT_NODE_PROBE_TIMEOUT", 3, minimum=1)
TT_NODE_PROBE_CACHE = env_int("TT_NODE_PROBE_CACHE", 10, minimum=0)
# /readyz takes a node whose engine finished an operation this recently as up,
# without asking it again.
TT_NODE_CONTACT_FRESH = env_int("TT_NODE_CONTACT_FRESH", 60, minimum=0)

_security = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware")
MIDDLEWARE[_security:_security + 1] = [
    "ttportal.proxy.TrustedProxies",
    "django.middleware.security.SecurityMiddleware",
    # /healthz and /readyz, answered before sessions and before the Host header is
    # checked against ALLOWED_HOSTS: a probe dials an address, not the site's name.
    "nodes.health.HealthChecks",
    # Static files from the web process itself: collected (collectstatic) into
    # STATIC_ROOT, with hashed names cached for ever, and gzipped.
    "whitenoise.middleware.WhiteNoiseMiddleware",
]
# With DEBUG on (development, tests) files come straight from static/ and the apps:
# no collectstatic needed. With it off, only what collectstatic put in STATIC_ROOT.
WHITENOISE_USE_FINDERS = WHITENOISE_AUTOREFRESH = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage" if DEBUG
                    else "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# Security: what `manage.py check --deploy` asks for, for a site served over
# HTTPS by the proxy. A request is secure when the proxy says so.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
# Plain HTTP is redirected to HTTPS (TT_SSL_REDIRECT=0 when the proxy does it),
# except the probes and a local Prometheus, which speak plain HTTP to the web
# server itself (SecurityMiddleware matches these against the path without its "/").
SECURE_SSL_REDIRECT = not DEBUG and env_bool("TT_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$", r"^readyz/?$", r"^metrics$"]
# HSTS is sent on HTTPS answers only. A year, and for subdomains, by default; the
# preload flag is the domain owner's decision (hstspreload.org), so it is opt-in and
# check --deploy's reminder of it (security.W021) is silenced while it is off.
SECURE_HSTS_SECONDS = 0 if DEBUG else env_int("TT_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("TT_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("TT_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
# Origins (scheme and host) allowed to POST besides the site itself: only needed
# when the proxy changes the Host header or forms are posted from another origin.
CSRF_TRUSTED_ORIGINS = env_origins("TT_CSRF_TRUSTED_ORIGINS")
