"""`fleet webhook`: a small receiver for AutoPi's `trip_export_finished` trigger signal.

It only records the signal (task id, trip id, when it arrived) in the AutoPi ledger and
answers 202 at once; `autopi_exports_sensor` sees it at its next tick and asks for a drain of
that task. Nothing is downloaded and no run is launched from the request thread, so a burst
of signals (AutoPi's daily re-broadcast) costs a few SQLite inserts.

The shared secret travels in the `X-Webhook-Secret` header (set it as a custom header of the
AutoPi trigger) and is compared in constant time; it is never logged or stored.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pipelines.settings import MissingCredentialError
from pipelines.sources.autopi.state import ExportLedger

SIGNAL = "trip_export_finished"
SECRET_HEADER = "X-Webhook-Secret"
MAX_BODY = 64 * 1024
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

log = logging.getLogger(__name__)


class WebhookServer(ThreadingHTTPServer):
    """The receiver; `serve_forever()` serves it, `url` says where (tests use port 0)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, secret: str, ledger: ExportLedger) -> None:
        if not secret:
            raise MissingCredentialError(
                "AUTOPI_WEBHOOK_SECRET is not set (needed by fleet webhook)"
            )
        self.secret = secret.encode()
        self.ledger = ledger
        self.received = 0
        self.rejected = 0
        self._count_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def authorized(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.secret)

    def count(self, *, accepted: bool) -> None:
        with self._count_lock:
            if accepted:
                self.received += 1
            else:
                self.rejected += 1

    def server_close(self) -> None:
        super().server_close()
        self.ledger.close()


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    server_version = "fleet-autopi-webhook"

    def log_message(self, format: str, *args: Any) -> None:
        return  # the default logs every request line; we log outcomes, never headers

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path.split("?")[0].rstrip("/") in ("", "/healthz"):
            self._reply(200, {"status": "ok", "signal": SIGNAL})
        else:
            self._reply(404, {"detail": "Not found."})

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) > MAX_BODY:
            self.close_connection = True
            self._reply(413 if length.isdigit() else 411, {"detail": "Body missing or too large."})
            return
        body = self.rfile.read(int(length))
        if not self.server.authorized(self.headers.get(SECRET_HEADER)):
            self.server.count(accepted=False)
            log.warning("AutoPi webhook: request with a missing or wrong secret rejected")
            self._reply(401, {"detail": "Invalid or missing webhook secret."})
            return
        try:
            signal = json.loads(body)
        except ValueError:
            self._reply(400, {"detail": "Body is not JSON."})
            return
        if not isinstance(signal, dict) or signal.get("signal", SIGNAL) != SIGNAL:
            self._reply(202, {"status": "ignored", "detail": f"not a {SIGNAL} signal"})
            return
        task_id = signal.get("task_id")
        if isinstance(task_id, str) and task_id.isdigit():
            task_id = int(task_id)
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            self._reply(400, {"detail": "task_id is missing or not an integer."})
            return
        trip_id = signal.get("trip_id")
        finished = signal.get("finished_at")
        self.server.ledger.add_signal(
            task_id,
            trip_id=str(trip_id) if trip_id is not None else None,
            finished_at=str(finished) if finished is not None else None,
            rebroadcast=bool(signal.get("rebroadcast", False)),
        )
        self.server.count(accepted=True)
        log.info("AutoPi webhook: export of task %s signalled", task_id)
        self._reply(202, {"status": "recorded", "task_id": task_id})


def make_webhook_server(
    host: str, port: int, secret: str | None, state_path: Path
) -> WebhookServer:
    """A bound receiver writing to the ledger at `state_path`; raises `MissingCredentialError`
    when no secret is configured (an open receiver would let anyone trigger drains)."""
    if not secret:
        raise MissingCredentialError("AUTOPI_WEBHOOK_SECRET is not set (needed by fleet webhook)")
    return WebhookServer(host, port, secret, ExportLedger(state_path))


def serve_webhook(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    secret: str | None = None,
    state_path: Path | None = None,
) -> int:
    """What `fleet webhook` runs: serve until interrupted. Secret and ledger path default to
    `AUTOPI_WEBHOOK_SECRET` and `$FLEET_LAKE_DIR/autopi/_state/autopi.sqlite3`."""
    from pipelines.settings import get_settings, load_env_file
    from pipelines.sources.autopi.state import state_path as default_state_path

    load_env_file()
    settings = get_settings()
    if secret is None and settings.autopi_webhook_secret is not None:
        secret = settings.autopi_webhook_secret.get_secret_value()
    path = state_path or default_state_path(settings.lake_dir)
    try:
        server = make_webhook_server(host, port, secret, path)
    except MissingCredentialError as exc:
        print(exc)
        return 2
    print(f"AutoPi webhook receiver on {server.url} (POST, header {SECRET_HEADER}); ledger {path}")
    print("Signals are picked up by autopi_exports_sensor at its next tick. Ctrl-C stops.")
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
