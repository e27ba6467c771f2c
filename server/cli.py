"""The `phloem` command. Exit codes: 0 ok, 1 model/query/build error (readable message), 2 usage."""

from __future__ import annotations

import ctypes
import gc
import os
import re
import shutil
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from enum import StrEnum
from importlib import metadata, resources
from pathlib import Path
from typing import Annotated

import duckdb
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from semantic import PhloemError, Project
from semantic.engines import connect
from semantic.engines.copy import copy_tables
from semantic.limits import Limits
from semantic.project.load import find_project, load_project
from semantic.project.tenants import Tenants
from semantic.project.verify import validate_project
from semantic.query.query import make_query
from server.beside import Beside, held_by_other, held_by_server, lock_of
from server.runtime import ServerRecord

HELP = ("Phloem: a semantic layer built on activity streams.\n\n"
        "While `phloem serve` runs a project, the other commands work beside it: query, dataset, build, "
        "rollups and validate's warehouse checks are answered by that server (found through the project's "
        ".phloem/server.json).")
app = typer.Typer(help=HELP, no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
out = Console(width=None if sys.stdout.isatty() else 240)  # pipes get whole rows, not folded cells
err = Console(stderr=True)



def _version(show: bool) -> None:
    if show:
        out.print(f"phloem {metadata.version('phloem')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the installed version and exit.")] = False) -> None:
    """Phloem: a semantic layer built on activity streams."""


ProjectOpt = Annotated[Path | None, typer.Option("--project", "-p", help="Project folder (default: nearest phloem.yml).")]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn every error a user can cause into a message and exit code 1, never a traceback."""
    try:
        yield
    except PhloemError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (duckdb.ProgrammingError, duckdb.DataError) as e:  # refused what was asked: said as the server says it
        from server.errors import warehouse_refusal
        err.print(f"[red]error:[/red] {escape(warehouse_refusal(e))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except duckdb.Error as e:
        if (lock := lock_of(e)) is not None:  # not opened through _open (which knows the project's server)
            err.print(f"[red]error:[/red] {escape(str(held_by_other(lock)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        err.print(f"[red]warehouse error:[/red] {escape(str(e).splitlines()[0])}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@contextmanager
def progress_bar(label: str) -> Iterator:
    """A rich progress bar fed by the library's (name, done, total) callbacks; quiet when not a terminal."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True,
                  disable=not err.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(name: str, done: int, total: int) -> None:
            bar.update(task, description=f"{label} {name}", completed=done, total=total)

        yield update


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder to create.")]) -> None:
    """Scaffold a working project (a stream over a CSV seed, a dataset, a view, metrics)."""
    if (directory / "phloem.yml").exists():
        err.print(f"[red]error:[/red] {directory} already holds a phloem.yml; choose an empty folder")
        raise typer.Exit(1)
    template = resources.files("semantic.demo") / "starter"
    with resources.as_file(template) as src:
        shutil.copytree(src, directory, dirs_exist_ok=True)
    settings = directory / "phloem.yml"
    settings.write_text(re.sub(r"^name: .*$", f"name: {project_name(directory)}", settings.read_text(), count=1,
                               flags=re.M))
    out.print(f"Created a Phloem project in [bold]{directory}[/bold]. Next:\n"
              f"  cd {directory} && phloem validate && phloem build && phloem dataset orders")


def project_name(directory: Path) -> str:
    """The folder's name as a project name (lowercase letters, digits, `_`; starts with a letter)."""
    name = re.sub(r"[^a-z0-9]+", "_", directory.resolve().name.lower()).strip("_")
    return name if re.match(r"[a-z]", name) else f"project_{name}".rstrip("_")


@app.command()
def validate(project: ProjectOpt = None) -> None:
    """Load and check every model file, then compile it against the warehouse; report every problem at once."""
    with user_errors():
        validated = validate_project(project)
        skipped = validated.skipped
        if skipped and (record := ServerRecord.read(validated.model.root)) is not None:
            Beside(record, validated.model).validate()  # the server that holds the file compiles the model
            skipped = None
    if skipped:
        err.print(f"[yellow]note:[/yellow] {skipped}")
    model = validated.model
    counts = {k: len(getattr(model, k)) for k in ("streams", "datasets", "views", "metrics")}
    out.print(f"[green]ok[/green] {model.settings.name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


@app.command()
def build(project: ProjectOpt = None,
          force: Annotated[bool, typer.Option("--force", help="Rebuild even what is up to date.")] = False,
          tenant: Annotated[str | None, typer.Option("--tenant", help="Build only this tenant (default: every "
                                                     "tenant phloem.yml lists under `tenants:`).")] = None) -> None:
    """Materialize streams and datasets (atomic: a failed build leaves the previous tables readable); with
    `tenants:` in phloem.yml, every tenant's (each into its own schema)."""
    with user_errors(), _open_tenants(project) as t, progress_bar("building") as update:
        builds = t.build if isinstance(t, Tenants) else t.build_tenants
        reports = builds(tenant, force=force, progress=lambda who, name, done, total: update(
            f"{who}: {name}" if who else name, done, total))
    for who, report in reports.items():
        label = f"{who}: " if who else ""
        for name in report.built:
            out.print(f"{label}built {name} in {report.seconds[name]:.2f}s")
        out.print(f"{label}[green]{len(report.built)} built[/green], {len(report.fresh)} already up to date")


@app.command()
def dataset(name: str, project: ProjectOpt = None,
            format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
            limit: Annotated[int | None, typer.Option("--limit", "-n", min=0)] = 20) -> None:
    """Print a dataset's rows (building it first if needed)."""
    with user_errors(), _open(project) as p, progress_bar("building") as update:
        table = p.dataset(name, limit=limit, progress=update)
    print_table(table, format, title=name)


DEMO_DIR = Path("phloem-demo")


@app.command()
def demo(directory: Annotated[Path, typer.Option("--dir", help="Where to put the demo project.")] = DEMO_DIR,
         scale: Annotated[int, typer.Option("--scale", min=10, help="Number of orders to generate.")] = 100_000,
         seed: Annotated[int, typer.Option("--seed")] = 7,
         postgres: Annotated[str | None, typer.Option(
             "--postgres", help="Put the demo in this PostgreSQL database instead of DuckDB: a DSN, or `${VAR}` to "
                                "keep it out of phloem.yml (read from the environment at every start).")] = None) -> None:
    """Generate the demo shop's data at a scale, build it, and show its orders."""
    with user_errors():
        if postgres is not None:
            use_postgres(directory, postgres)
        prepare_demo(directory, scale, seed)
        with _open(directory) as p:
            table = p.dataset("orders", limit=10)
    print_table(table, Format.table, title=f"orders (first 10 of {scale:,}) — project in {directory}")


def use_postgres(directory: Path, dsn: str) -> None:
    """Copy the demo project to `directory` if it is not there, with `warehouse:` set to PostgreSQL at `dsn`."""
    if not (directory / "phloem.yml").exists():
        with resources.as_file(resources.files("semantic.demo") / "project") as src:
            shutil.copytree(src, directory, dirs_exist_ok=True)
    settings = directory / "phloem.yml"
    warehouse = "warehouse:\n  engine: postgres\n  dsn: " + orjson.dumps(dsn).decode() + "\n"
    text = re.sub(r"^warehouse:\n(?:[ \t]+.*\n)*", lambda _: warehouse, settings.read_text(), count=1, flags=re.M)
    settings.write_text(text)


def prepare_demo(directory: Path, scale: int, seed: int) -> None:
    """Copy the demo project to `directory`, generate its data at `scale` and build it."""
    from semantic.demo.generate import generate

    if not (directory / "phloem.yml").exists():
        with resources.as_file(resources.files("semantic.demo") / "project") as src:
            shutil.copytree(src, directory, dirs_exist_ok=True)
    model = load_project(directory)
    record = ServerRecord.read(model.root)
    if record is not None and record.pid != os.getpid():
        raise held_by_server(record, directory, "`phloem demo` (it rewrites the demo's data)")
    on_postgres = model.settings.warehouse.engine == "postgres"  # generated in DuckDB, then copied to `raw`
    if not on_postgres:
        Path(model.database_path).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:" if on_postgres else model.database_path)
    try:
        with progress_bar(f"generating {scale:,} orders") as update:
            counts = generate(con, scale=scale, seed=seed, progress=update)
        if on_postgres:
            with err.status("copying the raw tables to PostgreSQL"):
                _copy_raw(con, model)
    finally:
        con.close()
    err.print("generated " + ", ".join(f"{n:,} {t}" for t, n in counts.items()))
    with _open(directory) as p, progress_bar("building") as update:
        p.build(force=True, progress=update)


@app.command()
def serve(project: Annotated[Path | None, typer.Argument(help="Project folder (default: the demo, built on first run).")] = None,
          host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
          port: Annotated[int, typer.Option("--port")] = 8000,
          timeout: Annotated[float, typer.Option("--timeout", help="Seconds a query may run (then 504).")] = 30.0,
          max_rows: Annotated[int | None, typer.Option(
              "--max-rows", min=0, help="Most rows one answer may have (0: no limit; default PHLOEM_MAX_ROWS or "
                                        "1,000,000).")] = None,
          max_bytes: Annotated[str | None, typer.Option(
              "--max-bytes", help="Largest answer in memory, e.g. 256MB (0: no limit; default PHLOEM_MAX_BYTES or "
                                  "256MB).")] = None,
          scale: Annotated[int, typer.Option("--scale", min=10, help="Demo orders, when serving the demo.")] = 100_000,
          pg_port: Annotated[int, typer.Option("--pg-port", min=0, max=65535,
                                               help="PostgreSQL wire protocol port (0: off).")] = 15432) -> None:
    """Serve a project over REST, GraphQL, semantic SQL and the PostgreSQL wire protocol (no argument: the demo shop).

    The PostgreSQL door asks for a password: set PHLOEM_PG_USERS="user:password,…" (SCRAM-SHA-256); without it
    every login to a project is refused. Only the built-in demo (no PROJECT) lets loopback clients in without a
    password when no users are set. PHLOEM_PG_TRUST (none|loopback|all) says who needs no password, overriding
    both; PHLOEM_PG_SSL_CERT / PHLOEM_PG_SSL_KEY turn on TLS.

    The HTTP doors answer anyone only on a loopback --host with no auth configured; PHLOEM_API_KEYS_FILE (API keys,
    `phloem keys create`), PHLOEM_JWT_SECRET(_FILE) or PHLOEM_JWKS (JWT bearer tokens) turn auth on (docs/auth.md),
    and a non-loopback --host refuses to start without one of them.

    Logs go to stderr as text, or as JSON lines with PHLOEM_LOG_FORMAT=json (level: PHLOEM_LOG_LEVEL);
    PHLOEM_AUDIT_LOG=/path appends one JSON line per query (who, what, rows) to that file; /metrics is for
    Prometheus (docs/observability.md).

    While it runs, the project's .phloem/server.json (mode 0600) tells the other commands where it is: run
    `phloem query`, `dataset`, `build`, `rollups` … in the project as usual and this server answers them.
    """
    _few_malloc_arenas()
    from server.observability import logs

    try:
        limits = Limits.from_env(rows=max_rows, bytes=max_bytes)
        logs.configure()  # PHLOEM_LOG_FORMAT=json|text, PHLOEM_LOG_LEVEL
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    auth = _auth(host)
    demo = project is None
    project = DEMO_DIR if demo else project
    with user_errors():
        root = project.resolve() if demo else find_project(project)
    # a record naming this very pid is a stale one (a container restarted: its server is pid 1 again)
    if (running := ServerRecord.read(root)) is not None and running.pid != os.getpid():
        err.print(f"[red]error:[/red] PID {running.pid} already serves this project at {running.url}"
                  + (f" (PostgreSQL port {running.pg_port})" if running.pg_port else "")
                  + f" — use that one (the other phloem commands work beside it), or stop it (kill {running.pid}) "
                  "first", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    near = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)  # where the CLI calls it
    try:
        record = ServerRecord.write(root, f"http://{near}:{port}", pg_port)
    except OSError:  # a read-only project (a Kubernetes ConfigMap): served all the same, the CLI cannot find it
        record = ServerRecord.unwritten(f"http://{near}:{port}", pg_port)
        err.print(f"note: {root} is read-only, so the other phloem commands there will not find this server",
                  highlight=False)
    # uvicorn stops gracefully on SIGTERM, then re-raises it: exit through `finally`, so the record goes too
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    try:
        _serve(root, demo, host, port, timeout, scale, pg_port, record, limits, auth)
    finally:
        record.remove(root)


def _auth(host: str):
    """Who may ask the HTTP doors; exits when nothing is configured and clients beyond this machine could ask."""
    from server.auth import Authenticator, is_loopback

    try:
        auth = Authenticator.from_env()
    except ValueError as e:
        err.print(f"[red]error:[/red] authentication is misconfigured: {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    if not auth.enabled and not is_loopback(host):
        err.print(f"[red]error:[/red] --host {escape(host)} lets other machines in, and no authentication is "
                  "configured: set PHLOEM_API_KEYS_FILE (API keys: `phloem keys create NAME --role ROLE`), "
                  "PHLOEM_JWT_SECRET or PHLOEM_JWT_SECRET_FILE (HS256 tokens), or PHLOEM_JWKS (RS256/ES256 "
                  "tokens) — see docs/auth.md — or serve on 127.0.0.1",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    return auth


def _few_malloc_arenas() -> None:
    """glibc gives busy threads heaps of their own; a threaded server's freed memory then stays spread over them
    and RSS creeps up. Two arenas, as MALLOC_ARENA_MAX=2 would (unless that is set), before any thread starts."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):  # musl and others have no mallopt: nothing to tune
        pass


def _serve(project: Path, demo: bool, host: str, port: int, timeout: float, scale: int, pg_port: int,
           record: ServerRecord, limits: Limits, auth=None) -> None:
    import uvicorn

    from server.app import create_app
    from server.observability import logs

    with user_errors():
        if demo and not (project / "phloem.yml").exists():
            err.print(f"first run: building the demo shop in {project}")
            prepare_demo(project, scale, 7)
        with _open(project) as p, progress_bar("building") as update:
            p.ensure_built(update)
        app_ = create_app(project, timeout=timeout, limits=limits, auth=auth)
        app_.state.runtime.token = record.token
    base = f"http://{host}:{port}"
    name = app_.state.runtime.project.model.settings.name
    pg_line = f"\n  Postgres postgresql://{host}:{pg_port}/{name}   (psql, BI tools, drivers)" if pg_port else ""
    out.print(f"Phloem is serving [bold]{name}[/bold]:\n"
              f"  Explorer {base}/   (the metric tree: values, changes and what drove them)\n"
              f"  REST     {base}/api/v1/meta   (POST /api/v1/query, /api/v1/explain, /api/v1/sql)\n"
              f"  OpenAPI  {base}/docs\n"
              f"  GraphQL  {base}/graphql{pg_line}"
              + ("\n  Auth     API keys and/or JWT bearer tokens (docs/auth.md)" if auth and auth.enabled else ""),
              highlight=False)
    # what startup loaded (model, compilers, libraries) lives as long as the server: out of the collector's reach,
    # a full collection no longer walks it (~100 ms with the event loop stopped, mid-stream)
    gc.freeze()
    # JSON: uvicorn's loggers write through ours (log_config=None); text: uvicorn's own format, as before
    config = uvicorn.Config(app_, host=host, port=port, log_level="warning",
                            **({"log_config": None} if logs.log_format() == "json" else {}))
    if not pg_port:
        uvicorn.Server(config).run()
        return
    from server.loop import run

    run(_serve_with_pg(uvicorn.Server(config), app_.state.runtime, host, pg_port, demo=demo))


async def _serve_with_pg(http, runtime, host: str, pg_port: int, demo: bool = False) -> None:
    """uvicorn and the PostgreSQL wire protocol server on one event loop, over one Runtime (`demo`: the
    built-in demo, where loopback clients need no password unless PHLOEM_PG_USERS is set)."""
    from server.pgwire import PgConfig, PgServer

    try:
        pg = PgServer(runtime, PgConfig.from_env(demo=demo, host=host, port=pg_port))
    except (ValueError, OSError) as e:  # PHLOEM_PG_* settings: a bad user list, trust value, certificate or key
        err.print(f"[red]error:[/red] the PostgreSQL door is misconfigured: {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    try:
        await pg.start()
    except OSError as e:
        err.print(f"[red]error:[/red] cannot listen on {host}:{pg_port} for PostgreSQL clients: {escape(str(e))} "
                  "(choose another --pg-port, or 0 to turn the PostgreSQL door off)", highlight=False)
        raise typer.Exit(1) from None
    try:
        await http.serve()
    finally:
        await pg.stop()


@app.command()
def worker(project: Annotated[Path | None, typer.Argument(help="Project folder (default: nearest phloem.yml).")] = None,
           once: Annotated[bool, typer.Option("--once", help="One pass, then exit (1 if anything failed).")] = False,
           interval: Annotated[float, typer.Option("--interval", min=0.01,
                                                   help="Seconds between passes.")] = 60.0) -> None:
    """Keep the project's tables built: each pass rebuilds what is stale and what its `refresh` schedule says is due.

    Run as many as you like against one PostgreSQL warehouse: a lock in the warehouse lets one build at a time
    (the others skip the pass), and servers answer from the previous tables until a build is published whole.
    On DuckDB one process owns the database file, so run the worker where no server holds it.
    """
    import logging
    import threading

    from semantic.project.tenants import Tenants
    from server.worker import for_tenants, run_all

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    with user_errors():
        tenants = Tenants(load_project(find_project(project)))
    try:
        workers = for_tenants(tenants)  # with `tenants:`, each tenant's tables on its own schedule and lock
        if once:
            raise typer.Exit(0 if all([w.run_once().ok for w in workers]) else 1)
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        run_all(workers, interval, stop)
    finally:
        tenants.close()


@app.command()
def query(
    metrics: Annotated[str, typer.Option("--metrics", "-m", help="Comma-separated metric names.")],
    by: Annotated[str, typer.Option("--by", "-b", help="Dimensions, e.g. channel,metric_time__month.")] = "",
    where: Annotated[list[str] | None, typer.Option("--where", "-w", help="SQL boolean over dimensions.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Start of the time range (date or timestamp).")] = None,
    end: Annotated[str | None, typer.Option("--to", help="End of the time range; a date includes the whole day.")] = None,
    order: Annotated[list[str] | None, typer.Option("--order", "-o", help="-profit or profit:desc.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=0)] = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    explain: Annotated[bool, typer.Option("--explain", help="Print the plan and SQL, run nothing.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Any metrics by any dimensions: `phloem query -m profit,margin --by channel,metric_time__month`."""
    time_range = {"start": start, "end": end} if (start or end) else None
    fields = dict(metrics=metrics, dimensions=by, filters=where or [], time_range=time_range,
                  order_by=[o for x in order or [] for o in x.split(",")], limit=limit)
    with user_errors(), _open(project) as p:
        q = make_query(**fields)
        if explain:
            out.print(p.explain(q), highlight=False, markup=False, soft_wrap=True)
            return
        with progress_bar("building") as update:
            table = p.query(q, progress=update)
    print_table(table, format, title=metrics, formats=metric_formats(p.model))


@app.command()
def tree(metric: Annotated[str | None, typer.Argument(help="Draw only this metric's subtree.")] = None,
         values: Annotated[bool, typer.Option("--values", help="Show each metric's value (in its format).")] = False,
         start: Annotated[str | None, typer.Option("--from", help="With --values: start of the time range.")] = None,
         end: Annotated[str | None, typer.Option("--to", help="With --values: end of the time range.")] = None,
         project: ProjectOpt = None) -> None:
    """Draw the metric tree: each metric, how it is computed, and what moves it up or down."""
    from rich.tree import Tree

    from semantic.metrics.tree import MetricTree

    with user_errors():
        model = load_project(project)
        mt = MetricTree.from_metrics(model.metrics)
        roots = [mt.node(metric).name] if metric else sorted(mt.roots(), key=lambda n: -mt.nodes[n].depth)
    shown: dict = {}
    if values:
        drawn = [n for n in dict.fromkeys(_subtree(mt, roots)) if not _over_time(model, mt, n)]
        time_range = {"start": start, "end": end} if (start or end) else None
        with user_errors(), _open(project) as p, progress_bar("building") as update:
            shown = p.query(make_query(metrics=drawn, time_range=time_range), progress=update).to_pylist()[0]
    formats = metric_formats(model)

    def label(name: str, edge=None) -> str:
        node = mt.nodes[name]
        how = f" [dim]= {node.formula}[/dim]" if node.kind != "simple" else f" [dim]({node.measure})[/dim]"
        sign = "" if edge is None else ("[green]+[/green] " if edge.sign > 0 else "[red]−[/red] ")
        offset = f" [yellow](offset {edge.offset})[/yellow]" if edge is not None and edge.offset else ""
        value = ""  # an offset input's value is another period's: not the one this query gives
        if name in shown and not offset:
            value = f"  [cyan]{escape(formatted(shown[name], formats.get(name)))}[/cyan]"
        return f"{sign}[bold]{name}[/bold]{value}{how}{offset}"

    def grow(branch: Tree, name: str) -> None:
        for edge in mt.children(name):
            grow(branch.add(label(edge.child, edge)), edge.child)

    for root in roots:
        t = Tree(label(root))
        grow(t, root)
        out.print(t)


def _over_time(model, mt, name: str) -> bool:
    """Whether a metric has a value only per time bucket (an offset or a running total, here or below it)."""
    m = model.metrics.get(name)
    if m is not None and (m.cumulative or any(i.offset for i in m.inputs.values())):
        return True
    return any(_over_time(model, mt, e.child) for e in mt.children(name))


def _subtree(mt, names: list[str]):
    for name in names:
        yield name
        yield from _subtree(mt, [e.child for e in mt.children(name)])


def _copy_raw(con: duckdb.DuckDBPyConnection, model) -> None:
    engine = connect(model)
    try:
        copy_tables(con, engine, "raw")
    finally:
        engine.close()


@contextmanager
def _open(project: Path | None) -> Iterator[Project | Beside]:
    """The project opened here or, while `phloem serve` holds its DuckDB file, that server."""
    with _opened(project, Project) as p:
        yield p


@contextmanager
def _open_tenants(project: Path | None) -> Iterator[Tenants | Beside]:
    """Every tenant's project opened here or, while `phloem serve` holds the DuckDB file, that server."""
    with _opened(project, Tenants) as tenants:
        yield tenants


@contextmanager
def _opened(project: Path | None, kind):
    model = load_project(find_project(project))
    try:
        opened = kind(model)
    except duckdb.Error as e:
        yield Beside(_server_holding(model, e), model)
        return
    try:
        yield opened
    finally:
        opened.close()


def _server_holding(model, error: duckdb.Error) -> ServerRecord:
    """The running server of this project that holds its DuckDB file, when that is why `error` was raised."""
    lock = lock_of(error, model.database_path)
    if lock is None:
        raise error
    record = ServerRecord.read(model.root)
    if record is None or record.pid == os.getpid() or (lock.pid and lock.pid != record.pid):
        raise held_by_other(lock) from None
    return record


def metric_formats(model) -> dict[str, str]:
    return {name: m.format for name, m in model.metrics.items() if m.format}


def formatted(value, format: str | None) -> str:
    """A cell as a reader wants it: `percent` 0.1234 → 12.34 %, `currency` 1234.5 → $1,234.50."""
    if value is None:
        return ""
    if format is None or format == "number" or isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return str(value)
    if format == "percent":
        return f"{value * 100:,.2f} %"
    if format == "currency":
        return f"{'-' if value < 0 else ''}${abs(value):,.2f}"
    return f"{round(value):,}"  # integer


def print_table(table: pa.Table, format: Format, title: str = "", formats: dict[str, str] | None = None) -> None:
    """Rows as a table, CSV or JSON; `formats` (column → metric format) shape table cells only, never CSV/JSON."""
    if format is Format.csv:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        sys.stdout.write(sink.getvalue().to_pybytes().decode())
    elif format is Format.json:
        sys.stdout.write(orjson.dumps(table.to_pylist(), default=str, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        formats = formats or {}
        t = Table(title=title, show_lines=False)
        for name in table.column_names:
            t.add_column(name, no_wrap=True, justify="right" if name in formats else "left")
        for row in table.to_pylist():
            t.add_row(*(formatted(v, formats.get(k)) for k, v in row.items()))
        out.print(t)


# ------------------------------------------------------------------ rollups

rollups_app = typer.Typer(help="Rollups: what is built, and which new ones the query log suggests.",
                          no_args_is_help=True)
app.add_typer(rollups_app, name="rollups")


@rollups_app.command("list")
def rollups_list(project: ProjectOpt = None) -> None:
    """Each declared rollup: what it holds, its refresh schedule, and what was last built."""
    from semantic.meta import rollups as described

    with user_errors(), _open(project) as p:
        if isinstance(p, Beside):
            items = p.rollups()
        else:
            p.ensure_catalog()
            items = described(p.compiler)
    t = Table(title="rollups")
    for name in ("rollup", "view", "grain", "dimensions", "measures", "partition", "refresh", "rows", "fresh"):
        t.add_column(name)
    for r in items:
        b = r["built"]
        fresh = "not built" if b is None else ("behind" if b["behind"] else "current") + (
            "" if b["current"] else " (old definition)")
        t.add_row(r["name"], r["view"], r["grain"], ", ".join(r["dimensions"]), ", ".join(r["measures"]),
                  r["partition"] or "", r["refresh"] or "every build", f"{b['rows']:,}" if b else "", fresh)
    out.print(t)


@rollups_app.command("suggest")
def rollups_suggest(project: ProjectOpt = None,
                    write: Annotated[bool, typer.Option("--write", help="Append them to models/rollups.yml.")] = False,
                    limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 5) -> None:
    """Propose rollups for the queries in .phloem/query_log.jsonl that none answers yet (size and speedup
    estimated in the warehouse)."""
    from semantic.materialize import suggest

    with user_errors(), _open(project) as p:
        found = p.suggest(limit) if isinstance(p, Beside) else suggest.suggest(p, limit=limit)
        if not found:
            out.print("no suggestion: every logged query is answered by a rollup (or the log is empty)")
            return
        t = Table(title="suggested rollups")
        for name in ("rollup", "view", "grain", "dimensions", "measures", "queries", "est. rows", "speedup"):
            t.add_column(name, justify="right" if name in ("queries", "est. rows", "speedup") else "left")
        for s in found:
            r = s.rollup
            t.add_row(r.name, r.view, r.grain, ", ".join(r.dimensions), ", ".join(r.measures), str(s.queries),
                      f"{s.rows:,}", f"{s.speedup:,.0f}x ({s.source_rows:,} rows scanned today)")
        out.print(t)
        if write:
            path = suggest.write(p.model.root, found)
            out.print(f"appended {len(found)} rollup(s) to {path}; `phloem build` builds them")


# ------------------------------------------------------------------ keys

keys_app = typer.Typer(help="API keys for the HTTP doors: the server keeps only their SHA-256 digests.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
KeysFile = Annotated[Path | None, typer.Option("--file", help="The keys file (default: PHLOEM_API_KEYS_FILE).")]


def _keys_file(file: Path | None) -> Path:
    if file is None and not os.environ.get("PHLOEM_API_KEYS_FILE"):
        raise typer.BadParameter("give --file, or set PHLOEM_API_KEYS_FILE to the server's keys file")
    return file if file is not None else Path(os.environ["PHLOEM_API_KEYS_FILE"])


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="Who holds the key: the user of its requests.")],
                role: Annotated[list[str] | None, typer.Option("--role", "-r", help="A role (repeatable).")] = None,
                tenant: Annotated[str | None, typer.Option("--tenant")] = None,
                attr: Annotated[list[str] | None, typer.Option(
                    "--attr", help="An attribute for access policies, k=v (a JSON list or object as v: parsed)"
                    )] = None,
                file: KeysFile = None) -> None:
    """Make an API key: printed once, here; only its digest goes into the keys file (mode 0600)."""
    from server.auth.keys import append_key, new_key

    attributes = {}
    for item in attr or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"--attr takes key=value, not {item!r}")
        try:
            attributes[k] = orjson.loads(v) if v[:1] in "[{" and v else v
        except orjson.JSONDecodeError:
            raise typer.BadParameter(f"--attr {k}: {v!r} is not valid JSON") from None
    path = _keys_file(file)
    key, entry = new_key(name, role or [], tenant, attributes)
    try:
        append_key(path, entry)
    except OSError as e:
        err.print(f"[red]error:[/red] cannot write the keys file {escape(str(path))}: {escape(e.strerror or '')}")
        raise typer.Exit(1) from None
    err.print(f"API key {entry.id} for {escape(name)} (roles: {', '.join(entry.roles) or 'none'}) added to "
              f"{escape(str(path))}; it is shown only now:", highlight=False, soft_wrap=True)
    out.print(key, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(file: KeysFile = None) -> None:
    """The keys in the keys file: id, holder, roles, tenant (never a key: the file has none)."""
    from server.auth.keys import read_keys

    try:
        entries = read_keys(_keys_file(file))
    except ValueError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    t = Table(title="API keys")
    for name in ("id", "name", "roles", "tenant", "attributes", "created"):
        t.add_column(name)
    for e in entries:
        t.add_row(e.id, e.name, ", ".join(e.roles), e.tenant or "", orjson.dumps(e.attributes).decode()
                  if e.attributes else "", e.created)
    out.print(t)


@keys_app.command("revoke")
def keys_revoke(which: Annotated[str, typer.Argument(help="A key's id, or a name (all of its keys).")],
                file: KeysFile = None) -> None:
    """Remove keys from the keys file; a running server refuses them from its next request."""
    from server.auth.keys import remove_keys

    try:
        gone = remove_keys(_keys_file(file), which)
    except (ValueError, OSError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}")
        raise typer.Exit(1) from None
    if not gone:
        err.print(f"[red]error:[/red] no key has the id or name {escape(which)}")
        raise typer.Exit(1)
    err.print(f"revoked {gone} key(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
