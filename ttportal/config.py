"""Read settings from environment variables, failing loudly on bad values.

A typo in a deployment variable must stop start-up with a message naming the
variable, never fall back silently to a default.
"""

from __future__ import annotations

import ipaddress
import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_database(name: str, default: dict) -> dict:
    """A database URL (postgres://user@host:port/db) or the given default."""
    raw = os.environ.get(name)
    if not raw:
        return default
    import dj_database_url

    if "://" not in raw:
        raise ImproperlyConfigured(f"{name} must be a database URL like postgres://user@host/db, got {raw!r}")
    try:
        config = dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=True)
    except (ValueError, KeyError) as exc:
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name} must name a database, got {raw!r}")
    return config


def env_redis(name: str) -> dict | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    from urllib.parse import urlparse

    parsed = urlparse(raw)
    if parsed.scheme not in {"redis", "rediss"} or not parsed.hostname:
        raise ImproperlyConfigured(f"{name} must be a URL like redis://host:6379/0, got {raw!r}")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        # A test worker of pytest-xdist (CI runs the unit tests on PostgreSQL and Redis over
        # both cores): each its own Redis database, as each has its own test database, so
        # that no worker pops another's tasks or clears its rate counts.
        raw = worker_redis_url(raw, int(worker.removeprefix("gw")))
    return {"url": raw}


def worker_redis_url(url: str, index: int) -> str:
    """The URL's database number plus `index` (none given is 0): redis://h:6379/4, 2 ->
    redis://h:6379/6."""
    match = re.match(r"^(rediss?://[^/?#]+)(?:/(\d+))?/?$", url)
    if match is None:  # options after the path: kept as they are
        return url
    return f"{match[1]}/{int(match[2] or 0) + index}"


def env_ports(name: str) -> tuple[tuple[str, int], ...]:
    """Protocol/port pairs like `tcp:3142,udp:123` (empty: none)."""
    raw = os.environ.get(name, "")
    pairs = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        proto, _, port = item.partition(":")
        if proto not in ("tcp", "udp") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ImproperlyConfigured(
                f"{name} must list protocol:port pairs like tcp:3142,udp:123, got {item!r}"
            )
        pairs.append((proto, int(port)))
    return tuple(pairs)


def env_seconds_list(name: str, default: tuple[int, ...], *, minimum: int = 1) -> tuple[int, ...]:
    """Comma-separated numbers of seconds like `3600,600`, largest first, each once
    (an empty value: none)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    values = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if not item.isdigit() or int(item) < minimum:
            raise ImproperlyConfigured(
                f"{name} must list numbers of seconds of at least {minimum}, like 3600,600; got {raw!r}"
            )
        values.append(int(item))
    if len(set(values)) != len(values):
        raise ImproperlyConfigured(f"{name} lists a number twice: {raw!r}")
    return tuple(sorted(values, reverse=True))


def env_url(name: str, default: str) -> str:
    """An http(s) URL with a host, without a trailing slash."""
    from urllib.parse import urlsplit

    raw = os.environ.get(name, default).strip()
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ImproperlyConfigured(f"{name} must be a URL like https://tt.example.com, got {raw!r}")
    return raw.rstrip("/")


def env_issuer_url(name: str) -> str:
    """An OpenID Connect URL, kept exactly as given (an issuer must match the tokens' `iss`
    to the character, its trailing slash included): https, or http to a loopback address
    (a provider on this machine); empty when unset."""
    from urllib.parse import urlsplit

    raw = os.environ.get(name, "").strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ImproperlyConfigured(
            f"{name} must be an https URL like https://id.example.com/realms/tt "
            f"(http only to 127.0.0.1 or localhost), got {raw!r}")
    return raw


def env_networks(name: str, default: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated networks in CIDR form (`127.0.0.1/32,::1/128`); empty: none."""
    raw = os.environ.get(name, default)
    networks = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list networks like 127.0.0.1/32,10.0.0.0/8,::1/128, got {item!r}"
            ) from None
    return tuple(networks)


def env_origins(name: str) -> list[str]:
    """Origins with their scheme (`https://tt.example.com`), comma-separated."""
    origins = env_list(name, [])
    for origin in origins:
        if not origin.startswith(("https://", "http://")) or origin.rstrip("/").count("/") != 2:
            raise ImproperlyConfigured(
                f"{name} must list origins like https://tt.example.com (scheme and host, no path), "
                f"got {origin!r}"
            )
    return origins


def env_secret(name: str, file_name: str) -> str:
    """A secret given as a variable, or as a file named by a second variable (so it
    stays out of the environment of every process); empty when neither is set."""
    value = os.environ.get(name, "")
    if value:
        return value
    path = os.environ.get(file_name, "")
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise ImproperlyConfigured(f"{file_name}: cannot read {path!r}: {exc.strerror}") from None
    if not value:
        raise ImproperlyConfigured(f"{file_name}: {path!r} is empty")
    return value


_RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
                 "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def env_rate(name: str, default: str | None) -> str | None:
    """A rate like `30/h` (at most 30 in any hour; s, m, h or d, as DRF's throttles read it),
    or `off` (no limit)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("off", "none", ""):
        return None
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or period not in _RATE_PERIODS:
        raise ImproperlyConfigured(
            f"{name} must be a rate like 30/h (a count of at least 1 per s, m, h or d) or off, got {raw!r}"
        )
    return f"{int(count)}/{period[0]}"


def service_hosts(database: dict, redis: dict | None) -> tuple[str, ...]:
    """The hosts of the site's database and Redis (a socket path or a local file is none)."""
    from urllib.parse import urlparse

    hosts = []
    host = database.get("HOST") or ""
    if host and not host.startswith("/"):
        hosts.append(host)
    if redis:
        hosts.append(urlparse(redis["url"]).hostname or "")
    return tuple(sorted({h for h in hosts if h}))
