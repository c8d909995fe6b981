"""Files copied into and out of a container, through the Docker API's archive calls (podman).

- **Stat** (`HEAD /containers/{id}/archive?path=`): the path's name, size, mode and, for a
  symbolic link, what it resolves to, in the X-Docker-Container-Path-Stat header. No body:
  every call below starts with it, to tell a missing path (404) or a directory at once.
- **Put** (`PUT …/archive?path=DIR`, a tar body): a tar header holds the file's size, so
  the chunks are first spooled to a temporary file on this side (never more than a chunk in
  memory), then streamed as a tar made on the fly. podman extracts straight into the name
  in the tar, and a body cut short leaves a truncated file there (checked on podman 4.3): so
  the file goes in under a temporary name beside the target and is renamed over it by an
  exec of `mv` (atomic: same directory). The user's upload breaking, podman failing or the
  rename failing leaves the old file, or none, at `path`. Mode and owner are the tar
  header's (podman applies its uid/gid): names are looked up in the container's own
  /etc/passwd and /etc/group, read through the archive API. podman creates missing
  directories on a put: we refuse instead (GuestPathMissing), as a guest agent would.
- **Get** (`GET …/archive?path=`): a tar of the one file, read from the response as it is
  iterated (tarfile's streaming mode), the HTTP response closed when the GuestFile is.
- **List**: an archive of a directory carries all of its tree (a listing of /usr would pull
  hundreds of MB), so the entries come from an exec of `find DIR -mindepth 1 -maxdepth 1
  -exec stat …` (busybox and GNU alike); an image without them (exit 127) falls back to
  reading the archive's headers, the file contents skipped.
"""

from __future__ import annotations

import base64
import contextlib
import json
import posixpath
import stat as stat_bits
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from docker.errors import APIError, NotFound

from engines.errors import EngineError, ErrorCode
from engines.guest_io import ExecRequest, ExecResult, FileEntry, GuestFile, GuestPathDenied, GuestPathMissing

CHUNK = 256 * 1024
SPOOL_IN_MEMORY = 1024 * 1024  # an upload up to this stays in memory, a bigger one on disk
DEFAULT_MODE = 0o644  # a file put without a mode: what a new file gets from most tools
LISTING_LIMIT = 32 * 1024 * 1024  # bytes of `stat` lines a listing may take
ACCOUNTS_LIMIT = 4 * 1024 * 1024  # /etc/passwd, /etc/group read for an owner's name
# Go's os.FileMode bits, as the stat header carries them.
GO_DIR, GO_SYMLINK = 1 << 31, 1 << 27
GO_SETUID, GO_SETGID, GO_STICKY = 1 << 23, 1 << 22, 1 << 20

RunCommand = Callable[[ExecRequest], ExecResult]


@dataclass(frozen=True)
class PathStat:
    name: str
    size: int
    mode: int  # Go's FileMode
    link_target: str  # the path with symbolic links resolved (podman fills it for any path)

    @property
    def is_dir(self) -> bool:
        return bool(self.mode & GO_DIR)

    @property
    def permissions(self) -> int:
        bits = self.mode & 0o777
        for go, unix in ((GO_SETUID, 0o4000), (GO_SETGID, 0o2000), (GO_STICKY, 0o1000)):
            if self.mode & go:
                bits |= unix
        return bits


def _archive_url(api, container: str) -> str:
    return api._url("/containers/{0}/archive", container)


def path_stat(api, container: str, path: str) -> PathStat | None:
    """The stat header of `path` in the container; None when there is no such path."""
    response = api.head(_archive_url(api, container), params={"path": path}, timeout=api.timeout)
    if response.status_code == 404:
        return None
    _raise_for_status(api, response, path)
    header = response.headers.get("X-Docker-Container-Path-Stat")
    if not header:
        raise EngineError(f"the engine said nothing of {path}", code=ErrorCode.GUEST_FILES)
    raw = json.loads(base64.b64decode(header))
    return PathStat(name=raw.get("name", ""), size=int(raw.get("size") or 0), mode=int(raw.get("mode") or 0),
                    link_target=raw.get("linkTarget") or path)


def _raise_for_status(api, response, path: str) -> None:
    try:
        api._raise_for_status(response)
    except APIError as exc:
        raise as_guest_error(exc, path) from exc


def as_guest_error(exc: APIError, path: str) -> EngineError:
    """What an archive call's refusal means for the user: 404 missing, 403 denied."""
    text = f"{exc.explanation or exc}"
    if exc.status_code == 404 or "no such file" in text.lower():
        return GuestPathMissing(f"{path}: no such file or directory")
    if exc.status_code == 403 or "permission denied" in text.lower():
        return GuestPathDenied(f"{path}: permission denied")
    return EngineError(f"{path}: {text}", code=ErrorCode.GUEST_FILES)


def _existing(api, container: str, path: str) -> PathStat:
    found = path_stat(api, container, path)
    if found is None:
        raise GuestPathMissing(f"{path}: no such file or directory")
    return found


# --- put -----------------------------------------------------------------------------------


def put_file(api, container: str, path: str, chunks: Iterator[bytes], run: RunCommand, *,
             mode: int | None = None, owner: str = "") -> int:
    """Write `chunks` to `path` in the container (see the module's doc); the bytes written.
    `run` runs a command in the container (the rename)."""
    directory, name = posixpath.split(path)
    if not name:
        raise EngineError(f"path {path!r} names a directory, not a file", code=ErrorCode.INVALID,
                          field="path")
    parent = _existing(api, container, directory)
    if not parent.is_dir:
        raise GuestPathMissing(f"{directory}: not a directory")
    target = path_stat(api, container, path)
    if target is not None and target.is_dir:
        raise EngineError(f"{path} is a directory", code=ErrorCode.INVALID, field="path")
    uid, gid = resolve_owner(api, container, owner)
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
        size = 0
        for chunk in chunks:
            spool.write(chunk)
            size += len(chunk)
        spool.seek(0)
        staged = f".{name}.tt-upload-{uuid.uuid4().hex[:12]}"
        header = tarfile.TarInfo(staged)
        header.size, header.uid, header.gid = size, uid, gid
        header.mode = DEFAULT_MODE if mode is None else mode
        header.mtime = int(time.time())
        staged_path = posixpath.join(directory, staged)
        try:
            try:
                ok = api.put_archive(container, directory, tar_stream(header, spool))
            except APIError as exc:
                raise as_guest_error(exc, path) from exc
            if not ok:
                raise EngineError(f"{path}: the engine refused the upload", code=ErrorCode.GUEST_FILES)
            moved = run(ExecRequest(argv=("mv", "-f", staged_path, path), timeout=60.0))
        except BaseException:
            _remove_quietly(run, staged_path)
            raise
    if moved.exit_code != 0:
        _remove_quietly(run, staged_path)
        raise _rename_error(path, moved)
    return size


def tar_stream(header: tarfile.TarInfo, body) -> Iterator[bytes]:
    """A one-file tar archive, made as it is read: the header, `body` (a file object at
    `header.size` bytes) in chunks, the padding to a whole block and the end of archive."""
    yield header.tobuf(tarfile.PAX_FORMAT)
    left = header.size
    while left > 0:
        chunk = body.read(min(CHUNK, left))
        if not chunk:
            raise EngineError("the upload's spool ended early", code=ErrorCode.GUEST_FILES)
        left -= len(chunk)
        yield chunk
    padding = -header.size % tarfile.BLOCKSIZE
    yield b"\0" * padding + b"\0" * (2 * tarfile.BLOCKSIZE)


def _remove_quietly(run: RunCommand, path: str) -> None:
    with contextlib.suppress(Exception):
        run(ExecRequest(argv=("rm", "-f", path), timeout=30.0))


def _rename_error(path: str, result: ExecResult) -> EngineError:
    said = (result.stderr or result.stdout).decode(errors="replace").strip()
    if result.exit_code == 127:
        return EngineError(f"{path}: the container has no `mv` to put the file in place ({said})",
                           code=ErrorCode.GUEST_FILES)
    if "permission denied" in said.lower():
        return GuestPathDenied(f"{path}: permission denied ({said})")
    return EngineError(f"{path}: could not put the file in place: {said}", code=ErrorCode.GUEST_FILES)


def resolve_owner(api, container: str, owner: str) -> tuple[int, int]:
    """("user" | "user:group", names or numbers) as (uid, gid): names from the container's
    /etc/passwd and /etc/group. No group: the user's own group (its number for a numeric
    user unknown to passwd). "" : root."""
    if not owner:
        return 0, 0
    user, _, group = owner.partition(":")
    if not user:
        raise EngineError(f"owner {owner!r}: a user is needed before the ':'", code=ErrorCode.INVALID,
                          field="owner")
    users = _accounts(api, container, "/etc/passwd") if not (user.isdigit() and (group.isdigit())) else {}
    if user.isdigit():
        uid = int(user)
        primary = next((entry[1] for entry in users.values() if entry[0] == uid), uid)
    elif user in users:
        uid, primary = users[user]
    else:
        raise EngineError(f"owner {owner!r}: no user {user!r} in the container's /etc/passwd",
                          code=ErrorCode.INVALID, field="owner")
    if not group:
        return uid, primary
    if group.isdigit():
        return uid, int(group)
    groups = _accounts(api, container, "/etc/group")
    if group not in groups:
        raise EngineError(f"owner {owner!r}: no group {group!r} in the container's /etc/group",
                          code=ErrorCode.INVALID, field="owner")
    return uid, groups[group][0]


def _accounts(api, container: str, path: str) -> dict[str, tuple[int, int]]:
    """name -> (its id, the third field's number: a user's group; 0 for groups), from an
    /etc/passwd-like file in the container; {} when it has none."""
    try:
        with get_file(api, container, path) as file:
            text = b"".join(_bounded(file, ACCOUNTS_LIMIT)).decode(errors="replace")
    except GuestPathMissing:
        return {}
    accounts = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            extra = fields[3] if len(fields) > 3 and fields[3].isdigit() else "0"
            accounts.setdefault(fields[0], (int(fields[2]), int(extra)))
    return accounts


def _bounded(chunks, limit: int) -> Iterator[bytes]:
    taken = 0
    for chunk in chunks:
        taken += len(chunk)
        if taken > limit:
            raise EngineError(f"more than {limit} bytes", code=ErrorCode.GUEST_FILES)
        yield chunk


# --- get -----------------------------------------------------------------------------------


def get_file(api, container: str, path: str) -> GuestFile:
    """The file at `path`, its bytes read lazily as the GuestFile is iterated. Raises before
    any chunk when it is missing or a directory."""
    found = _existing(api, container, path)
    if found.is_dir:
        raise EngineError(f"{path} is a directory: name a file (or list the directory)",
                          code=ErrorCode.INVALID, field="path")
    resolved = found.link_target if found.link_target.startswith("/") else path
    response = api._get(_archive_url(api, container), params={"path": resolved}, stream=True)
    try:
        _raise_for_status(api, response, path)
        archive = tarfile.open(fileobj=response.raw, mode="r|")  # noqa: SIM115 (closed with the response)
        member = archive.next()
        if member is None or not member.isfile():
            raise EngineError(f"{path} is not a regular file", code=ErrorCode.INVALID, field="path")
        body = archive.extractfile(member)
    except BaseException:
        response.close()
        raise

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := body.read(CHUNK):
                yield chunk
        finally:
            response.close()

    return GuestFile(chunks=chunks(), size=member.size, close=response.close)


# --- list ----------------------------------------------------------------------------------

# One line an entry: raw mode (hex), size, mtime, then the path (last: it may hold spaces).
_STAT_FORMAT = "%f %s %Y %n"


def list_dir(api, container: str, path: str, run: RunCommand) -> list[FileEntry]:
    found = _existing(api, container, path)
    if not found.is_dir:
        raise EngineError(f"{path} is not a directory", code=ErrorCode.INVALID, field="path")
    directory = found.link_target if found.link_target.startswith("/") else path
    listed = run(ExecRequest(
        argv=("find", directory, "-mindepth", "1", "-maxdepth", "1",
              "-exec", "stat", "-c", _STAT_FORMAT, "{}", "+"),
        timeout=60.0, output_limit=LISTING_LIMIT,
    ))
    if listed.exit_code == 127:  # no find or stat in the image
        return list_from_archive(api, container, directory)
    said = listed.stderr.decode(errors="replace")
    if listed.exit_code != 0 and "permission denied" in said.lower():
        raise GuestPathDenied(f"{path}: permission denied")
    if listed.exit_code != 0 or listed.stdout_truncated:
        problem = "too many entries" if listed.stdout_truncated else said.strip()
        raise EngineError(f"{path}: could not list it: {problem}", code=ErrorCode.GUEST_FILES)
    return sorted(parse_stat_lines(listed.stdout, directory), key=lambda e: e.name)


def parse_stat_lines(output: bytes, directory: str) -> list[FileEntry]:
    entries = []
    prefix = directory.rstrip("/") + "/"
    for line in output.decode(errors="surrogateescape").splitlines():
        parts = line.split(" ", 3)
        if len(parts) != 4 or not parts[3].startswith(prefix):
            continue  # a name with a newline in it: its pieces are skipped
        raw, size, mtime, full = parts
        try:
            mode = int(raw, 16)
            entries.append(FileEntry(name=full[len(prefix):], kind=_kind(mode), size=int(size),
                                     mode=stat_bits.S_IMODE(mode), mtime=float(mtime)))
        except ValueError:
            continue
    return entries


def _kind(mode: int) -> str:
    if stat_bits.S_ISREG(mode):
        return "file"
    if stat_bits.S_ISDIR(mode):
        return "dir"
    if stat_bits.S_ISLNK(mode):
        return "link"
    return "other"


def list_from_archive(api, container: str, directory: str) -> list[FileEntry]:
    """The directory's own entries from the headers of its archive (the whole tree is read
    through, contents skipped): for images without find and stat."""
    response = api._get(_archive_url(api, container), params={"path": directory}, stream=True)
    entries = []
    try:
        _raise_for_status(api, response, directory)
        with tarfile.open(fileobj=response.raw, mode="r|") as archive:
            for member in archive:
                _top, _, rest = member.name.strip("/").partition("/")
                if not rest or "/" in rest:
                    continue  # the directory itself, or deeper
                kind = ("file" if member.isfile() else "dir" if member.isdir() else
                        "link" if member.issym() else "other")
                entries.append(FileEntry(name=rest, kind=kind, size=member.size, mode=member.mode & 0o7777,
                                         mtime=float(member.mtime)))
    except NotFound as exc:
        raise GuestPathMissing(f"{directory}: no such file or directory") from exc
    finally:
        response.close()
    return sorted(entries, key=lambda e: e.name)
