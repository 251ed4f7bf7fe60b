"""The live dashboard: the run report, served while a ZephyrContext is open and reloaded as the run goes on.

A standard-library HTTP server in a daemon thread of the driver, on 127.0.0.1 unless a host is
given. Each request renders the current run's record so far (or the last run's, between runs)
with the running stage on top; the page reloads itself every ``REFRESH_SECONDS``. Nothing runs
unless the context asks for it, and the server stops when the context closes.
"""

from __future__ import annotations

import errno
import http.server
import sys
import threading
import time

from zephyr_arrow.execution.report import render_report
from zephyr_arrow.execution.run_record import RunRecord, RunRecorder

DEFAULT_PORT = 8642
REFRESH_SECONDS = 2.0


class Dashboard:
    """Serves the live page on ``host:port`` (another free port if that one is taken) until ``stop``."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.recorder: RunRecorder | None = None  # the run going on, if one is
        self.last: RunRecord | None = None  # the last run's record
        handler = _handler(self)
        try:
            self._server = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            self._server = http.server.ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="zephyr-arrow-dashboard", daemon=True)
        self._thread.start()
        print(f"zephyr_arrow: dashboard at {self.url}", file=sys.stderr, flush=True)

    def page(self) -> str:
        recorder = self.recorder
        now = time.time()
        if recorder is not None:
            return render_report(recorder.record("running", "", now), recorder.live(now), REFRESH_SECONDS)
        if self.last is not None:
            return render_report(self.last, None, REFRESH_SECONDS)
        return (f"<!DOCTYPE html><html><head><meta http-equiv='refresh' content='{REFRESH_SECONDS:g}'>"
                "<title>zephyr_arrow</title></head><body><p id='status'>No run yet.</p></body></html>")

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler(dashboard: Dashboard) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path not in ("/", "/index.html"):
                self.send_error(404)
                return
            body = dashboard.page().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: a reload every two seconds is no news for the driver's stderr."""

    return Handler
