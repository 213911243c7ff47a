"""``closedloop serve``: the HTTP inference server for every model's production alias."""

from __future__ import annotations

import errno
import gc
import ipaddress
import logging
import socket
import threading
from typing import Any

import click

from closedloop.cli.output import command_runner, say, workspace
from closedloop.errors import ConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (not yet listening), or a ConfigError naming why not.

    The server is handed this very socket, so nothing can take the port between the check and
    the start, and nothing is announced as serving on a port that is not ours.
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"cannot listen on {host!r}: the name does not resolve ({exc})",
            hint="Use --host 127.0.0.1 (or localhost).",
        ) from exc
    # IPv4 first: clients of "localhost" mostly try 127.0.0.1.
    family, kind, proto, _, address = min(found, key=lambda a: a[0] != socket.AF_INET)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use",
                hint=f"Pass --port N (another port), or stop the process listening on {port}.",
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(
                f"cannot listen on {host}: it is not an address of this machine",
                hint="Use --host 127.0.0.1 (or localhost).",
            ) from exc
        raise ConfigError(
            f"cannot listen on port {port} on {host}: {exc.strerror or exc}",
            hint="Ports below 1024 need privileges; pass --port 8080 or another free port.",
        ) from exc
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (the real port when 0 was asked for)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def settle_heap() -> None:
    """Move everything loaded so far out of the garbage collector's sight.

    The libraries and models loaded at start-up are never freed; without this every full
    collection walks them all, pausing every request for tens of milliseconds.
    """
    gc.collect()
    gc.freeze()


EPILOG = """\b
Examples (the server answers on http://127.0.0.1:8080 by default):
  # is a model ready to answer? (503 with the reason until one is)
  curl -s 127.0.0.1:8080/ping
  # predict (the answer's X-Request-ID header names the request)
  curl -s 127.0.0.1:8080/invocations -H 'Content-Type: application/json' \\
    -d '{"dataframe_split": {"columns": ["income", "age"], "data": [[52000, 31]]}}'
  # every class's probability per row, in the order of the model's classes
  curl -s 127.0.0.1:8080/invocations -H 'Content-Type: application/json' \\
    -d '{"dataframe_split": {...}, "params": {"predict_method": "predict_proba"}}'
  # labels that arrive later: one object, an array, or {"labels": [...]};
  # "row" is the row's position in its request (0, 1, ...), once per batch
  curl -s 127.0.0.1:8080/models/MODEL/feedback -H 'Content-Type: application/json' \\
    -d '[{"request_id": "REQUEST-ID", "row": 0, "label": 1}]'
  # limits: a body over server.max_body_bytes (32 MiB) or more rows than server.max_rows
  # (100,000) is a 413; a Content-Type other than JSON (or CSV, binary tensors) a 415
"""


@click.command("serve", epilog=EPILOG)
@click.option("--host", default=None, help="Address to bind (default: server.host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: server.port, 8080)."
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(0.05, 3600),
    default=None,
    help="Seconds between registry checks for moved aliases.",
)
@click.option(
    "--insecure-remote",
    is_flag=True,
    help="Allow a non-loopback address without authentication (not recommended).",
)
@click.option(
    "--agent",
    "with_agent",
    is_flag=True,
    help="Also run the agent's loop in this process (one-machine setups; see `closedloop agent`).",
)
@command_runner
def serve_cmd(
    host: str | None,
    port: int | None,
    poll_interval: float | None,
    insecure_remote: bool,
    with_agent: bool,
) -> None:
    """Serve every model's production version over HTTP.

    Speaks the Open Inference Protocol v2 (/v2/...) and MLflow's scoring protocol (/invocations).
    Alias moves (rollback, alias set) are picked up without restart. Every prediction is logged.
    With --agent, the agent's reconcile loop runs in a background thread of the server (it takes
    part in the agent lease like any `closedloop agent`).
    """
    ws = workspace()
    cfg = ws.settings.server
    host = host or cfg.host
    port = cfg.port if port is None else port
    if not is_loopback(host) and not insecure_remote:
        raise ConfigError(
            f"Refusing to bind {host}: serving beyond this machine needs authentication, which "
            "closedloop does not provide yet.",
            hint="Bind 127.0.0.1 behind an authenticating proxy, or pass --insecure-remote.",
        )
    agent_thread, agent_stop = None, threading.Event()
    if with_agent:
        from closedloop.services.agent import Agent

        agent = Agent(ws)  # a bad [agent] setting is refused before anything starts
        agent_thread = threading.Thread(
            target=agent.run, args=(agent_stop,), name="closedloop-agent", daemon=True
        )
    sock = bind(host, port)  # a taken port is refused before anything loads or is announced
    try:
        _serve(ws, sock, poll_interval, agent_thread, agent_stop)
    finally:
        sock.close()


def _serve(
    ws: Any,
    sock: socket.socket,
    poll_interval: float | None,
    agent_thread: threading.Thread | None,
    agent_stop: threading.Event,
) -> None:
    import uvicorn

    from closedloop.server import create_app
    from closedloop.services.serving import RegistryModelHost

    cfg = ws.settings.server
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("closedloop").setLevel(logging.INFO)
    model_host = RegistryModelHost(ws, poll_interval=poll_interval or cfg.poll_interval)
    model_host.start()
    log = ws.prediction_log()

    def shutdown() -> None:
        agent_stop.set()
        if agent_thread is not None and agent_thread.is_alive():
            agent_thread.join(timeout=30)  # the agent releases its lease as it stops
        model_host.stop()
        log.close()  # everything acknowledged is written before the process exits

    app = create_app(
        model_host,
        prediction_log=log,
        on_shutdown=shutdown,
        feedback_log=ws.feedback_log(),
        batch_max_rows=cfg.batch_max_rows,
        batch_max_wait_ms=cfg.batch_max_wait_ms,
        max_body_bytes=cfg.max_body_bytes,
        max_rows=cfg.max_rows,
    )
    settle_heap()
    if agent_thread is not None:
        agent_thread.start()
    say(
        f"closedloop serving {', '.join(model_host.names()) or 'no models yet'} "
        f"on {url_of(sock)}" + (" with the agent" if agent_thread is not None else "")
    )
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        shutdown()


def register(cli: click.Group) -> None:
    cli.add_command(serve_cmd)
