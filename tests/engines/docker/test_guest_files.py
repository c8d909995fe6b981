"""Files in and out of a container through the archive API, against a fake engine that
keeps a small filesystem and extracts tars as podman does: straight into the name in the
tar, a broken body leaving a truncated file (the real one: tests/integration/test_docker_guest.py)."""

from __future__ import annotations

import base64
import io
import json
import posixpath
import tarfile

import pytest
from docker.errors import APIError

from engines.docker import guest_files
from engines.docker.guest_files import PathStat, get_file, list_dir, parse_stat_lines, put_file, tar_stream
from engines.errors import EngineError, ErrorCode
from engines.guest_io import ExecRequest, ExecResult, GuestPathMissing

PASSWD = b"root::0:0:root:/root:/bin/sh\nwww:x:33:44::/www:/bin/sh\n"
GROUP = b"root:x:0:\nstaff:x:50:www\n"


class Response:
    def __init__(self, status: int, headers=None, body: bytes = b""):
        self.status_code, self.headers, self.raw = status, headers or {}, io.BytesIO(body)
        self.closed = False

    def close(self):
        self.closed = True


class FakeArchiveApi:
    """A container's filesystem: {path: (content, mode, uid, gid)} and directories."""

    timeout = 60

    def __init__(self):
        self.files = {"/etc/passwd": (PASSWD, 0o644, 0, 0), "/etc/group": (GROUP, 0o644, 0, 0),
                      "/tmp/old": (b"old content", 0o600, 0, 0)}
        self.dirs = {"/", "/etc", "/tmp", "/tmp/sub"}
        self.break_put_after = None  # bytes of the file body podman writes before failing
        self.responses: list[Response] = []

    def _url(self, path, *args):
        return path.format(*args)

    def _stat(self, path):
        if path in self.dirs:
            return {"name": posixpath.basename(path), "size": 4096, "mode": (1 << 31) | 0o755,
                    "linkTarget": path}
        if path in self.files:
            content, mode, _, _ = self.files[path]
            return {"name": posixpath.basename(path), "size": len(content), "mode": mode, "linkTarget": path}
        return None

    def head(self, url, params, timeout=None):
        found = self._stat(params["path"])
        if found is None:
            return Response(404)
        return Response(200, {"X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(found).encode())})

    def _raise_for_status(self, response):
        status = response.status_code
        if status >= 400:
            raise APIError(str(status), response=type("R", (), {"status_code": status})(),
                           explanation="no such file or directory" if status == 404 else "failed")

    def _get(self, url, params, stream):
        path = params["path"]
        if self._stat(path) is None:
            response = Response(404)
        else:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                inside = [p for p in {*self.files, *self.dirs} if p.startswith(path.rstrip("/") + "/")]
                for name in sorted([path, *inside]):
                    info = tarfile.TarInfo(posixpath.basename(path) + name[len(path):])
                    if name in self.dirs:
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                    else:
                        content, info.mode, info.uid, info.gid = self.files[name]
                        info.size = len(content)
                        tar.addfile(info, io.BytesIO(content))
            response = Response(200, body=buffer.getvalue())
        self.responses.append(response)
        return response

    def put_archive(self, container, path, data):
        stream = b""
        for chunk in data:
            stream += chunk
            if self.break_put_after is not None and len(stream) > 512 + self.break_put_after:
                info = tarfile.TarInfo.frombuf(stream[:512], "utf-8", "surrogateescape")
                self.files[f"{path}/{info.name}"] = (stream[512:512 + self.break_put_after], info.mode, 0, 0)
                raise APIError("500", explanation="write |1: broken pipe")
        with tarfile.open(fileobj=io.BytesIO(stream), mode="r") as tar:
            for member in tar:
                content = tar.extractfile(member).read()
                self.files[f"{path}/{member.name}"] = (content, member.mode, member.uid, member.gid)
        return True

    def run(self, request: ExecRequest) -> ExecResult:
        argv = request.argv
        if argv[:2] == ("mv", "-f"):
            self.files[argv[3]] = self.files.pop(argv[2])
            return ExecResult(exit_code=0)
        if argv[:2] == ("rm", "-f"):
            self.files.pop(argv[2], None)
            return ExecResult(exit_code=0)
        if argv[0] == "find":
            return ExecResult(exit_code=127, stderr=b"find: not found")
        raise AssertionError(argv)


@pytest.fixture
def api():
    return FakeArchiveApi()


def put(api, path, chunks, **kwargs):
    return put_file(api, "c", path, iter(chunks), api.run, **kwargs)


def test_a_file_goes_in_with_its_mode_and_named_owner_and_comes_back_in_chunks(api):
    body = [b"a" * 300_000, b"b" * 5]
    assert put(api, "/tmp/new.bin", body, mode=0o750, owner="www:staff") == 300_005
    content, mode, uid, gid = api.files["/tmp/new.bin"]
    assert (content, mode, uid, gid) == (b"".join(body), 0o750, 33, 50)
    assert [p for p in api.files if "tt-upload" in p] == []
    with get_file(api, "c", "/tmp/new.bin") as file:
        chunks = list(file)
    assert file.size == 300_005 and b"".join(chunks) == b"".join(body) and len(chunks) > 1
    assert api.responses[-1].closed


@pytest.mark.parametrize("owner, ids", [("", (0, 0)), ("www", (33, 44)), ("1000", (1000, 1000)),
                                        ("33", (33, 44)), ("7:8", (7, 8)), ("www:0", (33, 0))])
def test_an_owner_is_a_user_and_group_by_name_or_number(api, owner, ids):
    assert guest_files.resolve_owner(api, "c", owner) == ids


@pytest.mark.parametrize("owner", ["nobody", "www:wheel", ":staff"])
def test_an_unknown_owner_is_refused_naming_the_field_and_nothing_is_written(api, owner):
    with pytest.raises(EngineError) as raised:
        put(api, "/tmp/x", [b"data"], owner=owner)
    assert (raised.value.code, raised.value.field) == (ErrorCode.INVALID, "owner")
    assert "/tmp/x" not in api.files


def test_an_upload_that_breaks_on_our_side_leaves_the_old_file(api):
    def broken():
        yield b"new "
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        put_file(api, "c", "/tmp/old", broken(), api.run)
    assert api.files["/tmp/old"][0] == b"old content"
    assert [p for p in api.files if "tt-upload" in p] == []


def test_an_upload_the_engine_breaks_leaves_the_old_file_and_no_half_one(api):
    api.break_put_after = 1000
    with pytest.raises(EngineError):
        put(api, "/tmp/old", [b"n" * 100_000])
    assert api.files["/tmp/old"][0] == b"old content"
    assert [p for p in api.files if "tt-upload" in p] == []


def test_a_missing_directory_is_not_made_and_a_directory_is_not_overwritten(api):
    with pytest.raises(GuestPathMissing):
        put(api, "/nowhere/x", [b"x"])
    assert "/nowhere" not in api.dirs and not any(p.startswith("/nowhere") for p in api.files)
    with pytest.raises(EngineError) as raised:
        put(api, "/tmp/sub", [b"x"])
    assert raised.value.field == "path"


def test_getting_a_missing_file_or_a_directory_fails_before_any_chunk(api):
    with pytest.raises(GuestPathMissing):
        get_file(api, "c", "/tmp/nothing")
    with pytest.raises(EngineError) as raised:
        get_file(api, "c", "/tmp")
    assert (raised.value.code, raised.value.field) == (ErrorCode.INVALID, "path")


def test_a_listing_comes_from_stat_lines():
    output = (b"81a4 12 1700000000 /srv/a file\n41ed 4096 1700000001 /srv/dir\n"
              b"a1ff 7 1700000002 /srv/link\nstray piece of a name\n")
    entries = parse_stat_lines(output, "/srv")
    assert [(e.name, e.kind, e.size, e.mode) for e in entries] == [
        ("a file", "file", 12, 0o644), ("dir", "dir", 4096, 0o755), ("link", "link", 7, 0o777)]
    assert entries[0].mtime == 1700000000.0


def test_an_image_without_find_is_listed_from_the_archive_headers(api):
    entries = list_dir(api, "c", "/tmp", api.run)
    assert [(e.name, e.kind) for e in entries] == [("old", "file"), ("sub", "dir")]
    with pytest.raises(GuestPathMissing):
        list_dir(api, "c", "/nowhere", api.run)


def test_the_tar_made_on_the_fly_is_one_file_a_tar_reader_reads_back():
    header = tarfile.TarInfo("f")
    header.size, header.mode, header.uid = 1025, 0o640, 7
    stream = b"".join(tar_stream(header, io.BytesIO(b"z" * 1025)))
    assert len(stream) % tarfile.BLOCKSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        [member] = tar.getmembers()
        assert (member.size, member.mode, member.uid) == (1025, 0o640, 7)
        assert tar.extractfile(member).read() == b"z" * 1025


def test_go_mode_bits_become_unix_permissions():
    assert PathStat("tmp", 0, (1 << 31) | (1 << 20) | 0o777, "/tmp").permissions == 0o1777
    assert PathStat("tmp", 0, (1 << 31) | (1 << 20) | 0o777, "/tmp").is_dir
