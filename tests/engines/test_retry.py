"""Transient engine failures are retried a bounded number of times where the step is safe
to repeat; after the bound, the failure surfaces with its step's code."""

from __future__ import annotations

import libvirt
import pytest
from docker.errors import APIError
from requests import Response

from engines.docker.engine import transient_api_error, write_file
from engines.errors import EngineError, ErrorCode, fails_as
from engines.libvirt import connection
from engines.retry import retry


class Flaky:
    """Fails `failures` times with `error`, then answers "done"."""

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


class Transient(Exception):
    pass


def transient(exc: BaseException) -> bool:
    return isinstance(exc, Transient)


def no_sleep(waits: list[float]):
    return waits.append


def test_a_call_that_fails_twice_then_succeeds_is_answered_on_the_third_attempt():
    call, waits = Flaky(2, Transient("broken pipe")), []
    assert retry(call, transient=transient, what="t", sleep=no_sleep(waits)) == "done"
    assert call.calls == 3
    assert waits == [0.2, 0.4]  # a short back-off, doubled


def test_a_call_that_always_fails_surfaces_its_error_with_its_code_after_the_bound():
    call = Flaky(10, Transient("broken pipe"))
    with pytest.raises(EngineError) as raised, fails_as(ErrorCode.DEFINE_VM):
        retry(call, transient=transient, what="t", sleep=no_sleep([]))
    assert call.calls == 3
    assert raised.value.code == ErrorCode.DEFINE_VM and "broken pipe" in raised.value.message


def test_an_error_that_is_not_transient_is_never_retried():
    call = Flaky(1, ValueError("no such image"))
    with pytest.raises(ValueError):
        retry(call, transient=transient, what="t", sleep=no_sleep([]))
    assert call.calls == 1


def api_error(status: int, explanation: str) -> APIError:
    response = Response()
    response.status_code = status
    return APIError(f"{status} Server Error", response=response, explanation=explanation)


BROKEN_PIPE = api_error(500, "passing bulk input to subprocess: write |1: broken pipe")


class FakeContainer:
    name = "tt-n-1"

    def __init__(self, failures: int, error: Exception = BROKEN_PIPE):
        self.put = Flaky(failures, error)
        self.written: list[tuple[str, bytes]] = []

    def put_archive(self, path: str, data: bytes) -> bool:
        self.put()
        self.written.append((path, data))
        return True


def test_podman_s_broken_pipe_on_the_archive_api_is_retried(monkeypatch):
    monkeypatch.setattr("engines.retry.time.sleep", lambda s: None)
    container = FakeContainer(failures=2)
    write_file(container, "/etc", "machine-id", "abc\n")
    assert container.put.calls == 3 and [path for path, _ in container.written] == ["/etc"]


def test_a_broken_pipe_every_time_fails_the_step_with_its_code(monkeypatch):
    monkeypatch.setattr("engines.retry.time.sleep", lambda s: None)
    container = FakeContainer(failures=99)
    with pytest.raises(EngineError) as raised, fails_as(ErrorCode.DEFINE_VM):
        write_file(container, "/etc", "machine-id", "abc\n")
    assert container.put.calls == 3
    assert raised.value.code == ErrorCode.DEFINE_VM and "broken pipe" in raised.value.message


def test_only_an_engine_side_broken_pipe_or_reset_counts_as_transient():
    assert transient_api_error(BROKEN_PIPE)
    assert transient_api_error(api_error(502, "read: connection reset by peer"))
    assert not transient_api_error(api_error(500, "no such container"))
    assert not transient_api_error(api_error(400, "broken pipe in the request's own words"))


def libvirt_error(code: int, domain: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, domain, message, 2, None, None, None, 0, 0)
    return exc


class FakeDriver:
    """A libvirt driver whose connection stays up while its call fails as told."""

    uri = "test:///retry"
    reconnect_timeout = 1

    def __init__(self, failures: int, error: Exception):
        self.read = Flaky(failures, error)

    @connection.reconnecting
    def power_state(self) -> str:
        return self.read()

    def after_reconnect(self) -> None:
        raise AssertionError("the connection never died")


RESET = libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC,
                      "Cannot recv data: Connection reset by peer")


def test_libvirt_s_connection_reset_on_an_idempotent_call_is_retried(monkeypatch):
    monkeypatch.setattr(connection, "RETRY_DELAY_S", 0)
    driver = FakeDriver(2, RESET)
    assert driver.power_state() == "done"
    assert driver.read.calls == 3


def test_libvirt_s_reset_every_time_surfaces_after_the_bound(monkeypatch):
    monkeypatch.setattr(connection, "RETRY_DELAY_S", 0)
    driver = FakeDriver(99, RESET)
    with pytest.raises(EngineError) as raised, fails_as(ErrorCode.START_VM):
        driver.power_state()
    assert driver.read.calls == connection.ATTEMPTS == 3
    assert raised.value.code == ErrorCode.START_VM and "Connection reset" in raised.value.message


def test_a_libvirt_error_of_the_call_itself_is_not_retried():
    # A system error from the storage driver (a file it cannot read) is the call's own.
    driver = FakeDriver(1, libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_STORAGE,
                                         "cannot open volume: No such file or directory"))
    with pytest.raises(libvirt.libvirtError):
        driver.power_state()
    assert driver.read.calls == 1
