"""The bounds an Env file is held to, as plain values: envfile never imports Django.

They are the server's too: ttportal.limits (the server's one list of bounds) takes them
from here, so the file is checked by the words and numbers the API uses. Bounds that are a
deployment's settings (how many VMs an Env may hold, ports per VM, the longest
lifetime) are not here: the server checks them, and names the file's line.
"""

from __future__ import annotations

NAME_MAX = 63
NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
NAME_RULE = (
    "must be 1-63 characters of lower-case letters, digits and hyphens, "
    "starting with a letter and not ending with a hyphen"
)

CPU_MAX = 64
MEM_MAX_MB = 262144
DISK_MAX_MB = 4 * 1024 * 1024

PORT_MIN, PORT_MAX = 1, 65535
PORT_TEXT_PATTERN = (
    r"^([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    r"(/(tcp|udp))?$"
)
PROTOCOLS = ("tcp", "udp")

USER_DATA_MAX = 16384
USER_DATA_PATTERN = r"^#cloud-config[ \t]*(\r?\n[^\x00]*)?$"
USER_DATA_RULE = (f"must be a #cloud-config document: the first line #cloud-config, then YAML "
                  f"(at most {USER_DATA_MAX} characters)")

PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]+$"
TEMPLATE_NAME_MAX = 200
TEMPLATE_NAME_RULE = "must name an existing, enabled template"

ENV_REF_MAX = 255
LIFETIME_MIN = 1
IDLE_SUSPEND_MIN = 1
IDLE_SUSPEND_MAX = 7 * 24 * 60

NET_KINDS = ("nat", "flat")

# --- the file's own ----------------------------------------------------------------

# A count: "web[1..3]" is web1, web2, web3; "web[01..10]" pads to the width of its start.
COUNT_PATTERN = r"^[a-z][a-z0-9-]{0,61}\[[0-9]{1,4}\.\.[0-9]{1,4}\]$"
VM_NAME_PATTERN = f"{NAME_PATTERN}|{COUNT_PATTERN}"
VM_NAME_RULE = f"{NAME_RULE}; or a count such as web[1..3]"
# However the server is set, no file expands to more VMs than this: a count is expanded
# only after the whole file's total is known to be within it.
VMS_MAX = 1000

# A peer: one of the owner's own Envs by name, or another owner's as owner/name.
PEER_PATTERN = r"^([^/\x00-\x1f\x7f]+/)?[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"
PEER_RULE = "must name an Env: one of yours by its name, or another owner's as owner/name"
PEERS_MAX = 100

# A lifetime: seconds, or "2h", "90m", "1d", "1h30m".
LIFETIME_PATTERN = r"^([0-9]{1,7}[dhms])+$"
LIFETIME_ABS_MAX = 10 * 365 * 24 * 3600  # no server takes more; keeps the arithmetic small
LIFETIME_RULE = 'must be a number of seconds, or a duration such as "2h", "90m", "1d" or "1h30m"'

# A user_data file: "@cloud-init.yaml", read by the tt command (relative to the Env file).
USER_DATA_FILE_PATTERN = r"^@[^\x00]{1,4096}$"

# What a YAML document may cost: nesting, and nodes once its aliases are expanded.
DEPTH_MAX = 32
NODES_MAX = 50_000
