"""Every bound and pattern a request is held to, declared once.

The services check them (so the portal, the API and the admin refuse the same
things with the same words), and the API's serializers hand the same numbers
and patterns to its OpenAPI schema, so the schema says exactly what the server
takes. Patterns are written to mean the same in Python's `re` (used with
`fullmatch`) and in the ECMA dialect JSON Schema uses.
"""

from __future__ import annotations

import re

from django.conf import settings

# The bounds an Env file is held to too are declared in envfile.bounds (plain Python: the
# `tt` command line checks a file before sending it), and are the server's from there:
# Env, VM and snapshot names end up in host names (DNS labels: NAME_*); a VM's resources
# (CPU_MAX, MEM_MAX_MB, DISK_MAX_MB); forwarded ports, 80, "80", "53/udp" or {"protocol":
# "udp", "inner_port": 53} (PORT_*, PROTOCOLS; how many one VM may forward is a setting,
# ports_max()); a VM's own cloud-config, a YAML mapping whose first line says what it is, as
# cloud-init itself requires, capped at 16 KiB as EC2 caps user-data (USER_DATA_*); text
# that names something stored, with none of the control characters no name has
# (PRINTABLE_PATTERN); a template's name (TEMPLATE_NAME_*), another owner's Env reference
# (ENV_REF_MAX) and the shortest lifetime (LIFETIME_MIN).
from envfile.bounds import (  # noqa: F401 (re-exported: they are the server's bounds)
    CPU_MAX,
    DISK_MAX_MB,
    ENV_REF_MAX,
    IDLE_SUSPEND_MAX,
    IDLE_SUSPEND_MIN,
    LIFETIME_MIN,
    MEM_MAX_MB,
    NAME_MAX,
    NAME_PATTERN,
    NAME_RULE,
    PORT_MAX,
    PORT_MIN,
    PORT_TEXT_PATTERN,
    PRINTABLE_PATTERN,
    PROTOCOLS,
    TEMPLATE_NAME_MAX,
    TEMPLATE_NAME_RULE,
    USER_DATA_MAX,
    USER_DATA_PATTERN,
    USER_DATA_RULE,
)

# Addresses a VM may not reach.
BLACKLIST_MAX = 1024
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_PATTERN = rf"^({_OCTET}\.){{3}}{_OCTET}$"

# Snapshots live from a minute to a year (none: kept until destroyed).
SNAPSHOT_LIFE_MIN = 60
SNAPSHOT_LIFE_MAX = 365 * 24 * 3600

# An Env's lifetime in seconds: at least LIFETIME_MIN, at most TT_MAX_ENV_LIFETIME.
# Sleep when idle (Env.idle_suspend), in minutes: IDLE_SUSPEND_MIN to IDLE_SUSPEND_MAX (a week).

# API tokens.
TOKEN_NAME_MAX = 100
# Printable (no control characters), and not only spaces.
TOKEN_NAME_PATTERN = r"^(?=[\s\S]*[^ ])[^\x00-\x1f\x7f]+$"
TOKEN_NAME_RULE = "must be 1-100 characters, not only spaces and no control characters"
TOKEN_TTL_MIN = 60

# A blueprint's description (its file is bounded as any Env file sent: envs.envfiles.MAX_CHARS).
BLUEPRINT_DESCRIPTION_MAX = 1000

# SSH keys per user (their text's own rules are in accounts.sshkeys).
SSH_KEYS_MAX = 100

# How deeply a VM's cloud-config may nest its lists and mappings: real cloud-configs go 4
# or 5 deep (write_files: - content: ...); a parser recurses per level.
USER_DATA_DEPTH_MAX = 20
USER_DATA_DEPTH_RULE = f"must not nest lists and mappings more than {USER_DATA_DEPTH_MAX} levels deep"

# An API request's JSON body: how deeply its arrays and objects may nest (ttportal.parsers).
JSON_DEPTH_MAX = 32
JSON_DEPTH_RULE = f"JSON body nested more than {JSON_DEPTH_MAX} levels deep"

# Text a list is filtered by (a substring, a name): anything but NUL.
QUERY_TEXT_PATTERN = r"^[^\x00]*$"

# Users are named by their username (Django's limit).
USERNAME_MAX = 150

# Requests.
IDEMPOTENCY_KEY_MAX = 128
PAGE_SIZE_MAX = 200
# The largest id a database row can have (a 64-bit signed primary key).
ID_MAX = 2**63 - 1


def lifetime_max() -> int:
    return settings.TT_MAX_ENV_LIFETIME


def token_ttl_max() -> int:
    return settings.TT_API_TOKEN_MAX_TTL


def vms_max() -> int:
    return settings.TT_MAX_VMS_PER_ENV


def ports_max() -> int:
    """Forwarded ports one VM may have (its owner's quota bounds all their VMs')."""
    return settings.TT_MAX_PORTS_PER_VM


def ports_rule() -> str:
    return f"at most {ports_max()} ports per VM (TT_MAX_PORTS_PER_VM)"


def between(low: int, high: int, unit: str = "") -> str:
    """The rule of a bounded integer, as every refusal states it."""
    unit = f" {unit}" if unit else ""
    return f"must be an integer between {low} and {high}{unit}"


def matches(pattern: str, value) -> bool:
    """`value` is a string matching `pattern` whole (no trailing newline slips through `$`)."""
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


# Another owner's Env, as its owner tells it: "owner/name".
ENV_REF_PATTERN = r"^[^/\x00]+/[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
ENV_REF_RULE = "must name an Env as owner/name"

# Webhooks (notifications/): an http(s) URL of printable ASCII with a host (a name, an
# IPv4 or a bracketed IPv6 address) and maybe a port, no user:password@ and no #fragment;
# the rest (a valid port, a host name's labels, an address allowed) is checked on the data.
WEBHOOK_URL_MAX = 2000
WEBHOOK_URL_PATTERN = r"^https?://([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?][!$-~]*)?$"
WEBHOOK_URL_RULE = ("must be an http:// or https:// URL with a host, without user:password@ or a #fragment "
                    f"(at most {WEBHOOK_URL_MAX} characters)")
WEBHOOKS_MAX = 20

# Into a running guest (vms/guest_access.py): a command, its environment, a path in the guest.
EXEC_ARGV_MAX = 256  # arguments of one command, the program included
EXEC_ARG_MAX = 32768  # characters of one argument
EXEC_ENV_MAX = 64  # variables added to the command's environment
EXEC_ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"  # POSIX's portable names: no '=', no NUL
EXEC_ENV_NAME_RULE = ("must be a variable name: letters, digits and underscores, not starting with a digit "
                      "(at most 128 characters)")
EXEC_ENV_VALUE_MAX = 32768
# Text with anything but NUL, which no argv, environment or path can carry.
NO_NUL_PATTERN = r"^[^\x00]*$"
EXEC_STDIN_MAX = 1024 * 1024  # characters of stdin (text, sent as UTF-8)
EXEC_TIMEOUT_MIN = 1  # seconds; the default and the most are engines.guest_io's
GUEST_PATH_MAX = 4096  # Linux's PATH_MAX
GUEST_PATH_PATTERN = r"^/[^\x00]*$"
GUEST_PATH_RULE = (f"must be an absolute path (starting with /), without NUL, at most {GUEST_PATH_MAX} "
                   "characters")
_GUEST_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}"  # a user or group name, or a numeric id
GUEST_USER_PATTERN = rf"^{_GUEST_NAME}$"
GUEST_USER_RULE = ("must be a user name or numeric id: letters, digits, '_', '.' and '-', at most 32 "
                   "characters")
GUEST_OWNER_PATTERN = rf"^{_GUEST_NAME}(:{_GUEST_NAME})?$"
GUEST_OWNER_RULE = "must be user or user:group (names or numeric ids, at most 32 characters each)"
FILE_MODE_MAX = 0o7777
FILE_MODE_PATTERN = r"^0?[0-7]{1,4}$"
FILE_MODE_RULE = "must be permission bits in octal, 0 to 7777 (e.g. 0644 or 755)"


def file_max_bytes() -> int:
    """The most one file copied to or from a guest may hold (TT_FILE_MAX_MB)."""
    return settings.TT_FILE_MAX_MB * 1024 * 1024
