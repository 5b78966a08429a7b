"""`digitpipe notify`: where the team is told about versions awaiting approval, monitor alarms and failed
deployment runs (Prefect automations calling a webhook, on the Prefect server at PREFECT_API_URL)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlparse

import typer

from cli.app import app
from digitpipe.errors import UserError
from digitpipe.files import first_line
from flows import startup


@app.command()
def notify(url: Annotated[str, typer.Option(help="The webhook to POST to (Slack, a pager, any HTTP endpoint).")]) \
        -> None:
    """Send versions awaiting approval, monitor alarms and failed deployment runs to a webhook, through Prefect
    automations on the server at PREFECT_API_URL (run again to change the URL)."""
    if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
        raise UserError(f"--url {url!r}: expected an http:// or https:// URL")
    if not startup.configured_api_url():
        raise UserError("no Prefect server: set PREFECT_API_URL (automations live on the server that runs the "
                        "deployments)")
    startup.set_environment(quiet=True)
    from flows.notify import set_up

    try:
        names = set_up(url)
    except Exception as exc:  # httpx's and Prefect's errors alike: the server could not be reached or refused
        raise UserError(f"cannot set up the automations on {startup.configured_api_url()} "
                        f"({first_line(exc, 160)})") from None
    typer.echo(f"automations {', '.join(names)} post to {url}")
