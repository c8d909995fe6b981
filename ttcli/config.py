"""Where `tt login` keeps the server and token: config.json in the user's config directory
(platformdirs: ~/.config/tt on Linux; TT_CONFIG_DIR moves it), readable by the user alone
(0600, in a 0700 directory). TT_URL and TT_TOKEN override it, for CI jobs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str
    user: str = ""
    source: str = "config"  # "config" | "environment"


def config_dir() -> Path:
    if os.environ.get("TT_CONFIG_DIR"):
        return Path(os.environ["TT_CONFIG_DIR"])
    from platformdirs import user_config_dir

    return Path(user_config_dir("tt", appauthor=False))


def config_file() -> Path:
    return config_dir() / "config.json"


def stored() -> dict:
    try:
        return json.loads(config_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def credentials() -> Credentials | None:
    """The server and token to use: TT_URL/TT_TOKEN over what `tt login` stored."""
    saved = stored()
    url = os.environ.get("TT_URL") or saved.get("url", "")
    token = os.environ.get("TT_TOKEN") or saved.get("token", "")
    if not url or not token:
        return None
    from_env = bool(os.environ.get("TT_URL") or os.environ.get("TT_TOKEN"))
    user = saved.get("user", "") if not from_env else ""
    return Credentials(url=url.rstrip("/"), token=token, user=user,
                       source="environment" if from_env else "config")


def save(url: str, token: str, user: str, token_id: str = "") -> Path:
    """Write the credentials, never readable by anyone but the user (even for an instant)."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = config_file()
    data = {"url": url.rstrip("/"), "token": token, "user": user, "token_id": token_id}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (json.dumps(data, indent=2) + "\n").encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def forget() -> bool:
    try:
        config_file().unlink()
    except FileNotFoundError:
        return False
    return True
