"""`digitpipe notify` checks what it is given before it talks to a server: one line, exit 2."""

from tests.helpers import assert_one_line_error


def test_notify_needs_a_prefect_server(digitpipe_cli, monkeypatch, tmp_path):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # no profile naming a server either
    done = digitpipe_cli("notify", "--url", "https://hooks.example.org/digits")
    assert_one_line_error(done.code, done.err, 2, "no Prefect server: set PREFECT_API_URL")


def test_notify_refuses_what_is_not_a_web_address(digitpipe_cli):
    done = digitpipe_cli("notify", "--url", "ftp://example.org/x")
    assert_one_line_error(done.code, done.err, 2, "--url 'ftp://example.org/x': expected an http:// or https:// URL")
