"""Usage errors (an unknown command, a mistyped flag, a missing option) give click's short usage message and exit 2,
with no traceback, for every command."""

import pytest

COMMANDS = ["run", "tune", "validate", "eda", "score", "feedback", "export", "models", "promote", "data fetch",
            "monitor reference", "serve", "card", "approve", "approvals", "gc", "notify"]


def _usage_error(result, command: str, message: str) -> None:
    assert result.code == 2, result.err
    assert result.err.startswith(f"Usage: digitpipe {command}".rstrip()), result.err
    assert result.err.strip().splitlines()[-1] == f"Error: {message}", result.err
    assert "Traceback" not in result.err


def test_an_unknown_command_is_a_usage_error(digitpipe_cli):
    _usage_error(digitpipe_cli("tuen"), "", "No such command 'tuen'. Did you mean 'tune'?")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_flag_is_a_usage_error(digitpipe_cli, command):
    _usage_error(digitpipe_cli(*command.split(), "--nosuchflag"), command, "No such option: --nosuchflag")


@pytest.mark.parametrize(("command", "missing"), [("score", "--model"), ("tune", "--model"), ("validate", "--data"), ("eda", "--data"),
                                                  ("export", "--model"), ("feedback", "--input"),
                                                  ("card", "--version"), ("approve", "--version"), ("gc", "--keep"), ("notify", "--url")])
def test_a_missing_option_is_a_usage_error(digitpipe_cli, command, missing):
    _usage_error(digitpipe_cli(command), command, f"Missing option '{missing}'.")


def test_every_command_is_covered():
    """A command added later gets its usage test too."""
    import typer.main

    from cli import app

    group = typer.main.get_command(app)
    found = {name for name, cmd in group.commands.items() if not hasattr(cmd, "commands")}
    found |= {f"{name} {sub}" for name, cmd in group.commands.items() for sub in getattr(cmd, "commands", {})}
    assert found == set(COMMANDS)
