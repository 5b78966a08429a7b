"""`digitpipe serve`'s refusals before it listens, in-process: a host with a port in it, a file that is no model
(and no store left behind), each one line and exit 2; the URL it prints for an IPv6 address."""

from __future__ import annotations

import socket

import pytest

from cli.serving import _described, _url
from tests.helpers import assert_one_line_error


@pytest.mark.parametrize("host", ["127.0.0.1:80", "http://127.0.0.1", "local host"])
def test_a_host_that_is_not_an_address_or_a_name_is_one_line(digitpipe_cli, host):
    done = digitpipe_cli("serve", "--host", host)
    assert_one_line_error(done.code, done.err, 2, f"--host {host!r}: not an IP address or a host name (the port "
                                                  "goes in --port)")


def test_a_file_that_is_not_a_model_is_refused_before_a_store_is_made(digitpipe_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    done = digitpipe_cli("serve", "--model", "bad.onnx", "--port", "0")
    assert_one_line_error(done.code, done.err, 2, "bad.onnx: cannot load as an ONNX model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"] and "INFO" not in done.err


def test_the_banner_names_an_ipv6_url_and_a_file_without_a_version():
    with socket.socket(socket.AF_INET6) as listening:
        listening.bind(("::1", 0))
        assert _url(listening) == f"http://[::1]:{listening.getsockname()[1]}/"
    assert _described({"model": "lenet", "version": None, "precision": "fp32"}) == (
        "lenet (fp32; a file, not a registered version)")
    assert _described({"model": "lenet", "version": "3", "precision": "int8"}) == "lenet v3 (int8)"
