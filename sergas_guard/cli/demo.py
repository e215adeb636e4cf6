"""``sergas-guard demo``: serve the demo service (sergas_guard.demo_app) with uvicorn."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from sergas_guard.errors import ConfigurationError
from sergas_guard.secrets import scrub_url

__all__ = ["command"]

HOST = "127.0.0.1"  # the demo never listens beyond this machine


@click.command(name="demo")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--storage",
    default="memory://",
    show_default=True,
    help="where limits are counted: memory://, redis://host:port/db, redis+cluster://…",
)
def command(port: int, storage: str) -> None:
    """Serve a small FastAPI app guarded by rate limits, a breaker and health routes."""
    try:
        import uvicorn

        from sergas_guard.demo_app import ROUTES, create_app, try_line
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"the demo service needs {exc.name}, from the web extra: "
            "pip install 'sergas-guard[web]' (or pip install -e '.[web]' in a checkout)"
        ) from None

    try:
        app = create_app(storage)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--storage") from None
    base_url = f"http://{HOST}:{port}"
    console = Console()
    table = Table(title=f"sergas-guard demo on {base_url} (storage: {scrub_url(storage)})")
    table.add_column("method")
    table.add_column("path")
    table.add_column("shows")
    for method, path, shows in ROUTES:
        table.add_row(method, path, shows)
    console.print(table)
    console.print("Try it (watch the 429s arrive):", style="bold")
    console.print(try_line(base_url), soft_wrap=True, highlight=False, markup=False)
    console.print(f"curl -i {base_url}/search?q=x   # see the RateLimit headers", highlight=False)
    uvicorn.run(app, host=HOST, port=port, log_level="info")
