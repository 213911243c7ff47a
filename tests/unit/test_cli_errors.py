"""The CLI's last-resort error net: nothing leaves a command as a traceback with exit code 1
(which means "drift found")."""

from __future__ import annotations

import pytest

from closedloop.cli.output import handle_errors


def _run(exc: BaseException, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited, handle_errors(debug=False):
        raise exc
    return int(exited.value.code or 0), capsys.readouterr().err


def test_a_storage_failure_that_slipped_through_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = _run(ConnectionRefusedError(111, "Connection refused\n  to 127.0.0.1"), capsys)
    assert code == 2
    assert err.splitlines()[0] == "error: A store or file could not be used: [Errno 111] " + (
        "Connection refused to 127.0.0.1"
    )
    assert err.splitlines()[1].startswith("hint: ") and len(err.splitlines()) == 2
    assert "Traceback" not in err


def test_a_driver_error_outside_oserror_is_recognised_by_its_package(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from botocore.exceptions import EndpointConnectionError

    code, err = _run(EndpointConnectionError(endpoint_url="http://127.0.0.1:1/b"), capsys)
    assert code == 2
    assert "store or file could not be used" in err and "http://127.0.0.1:1/b" in err


def test_an_unexpected_error_is_exit_2_never_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(KeyError("column"), capsys)
    assert code == 2
    assert err.splitlines()[0] == "error: Unexpected error: KeyError: 'column'"
    assert "--debug" in err
