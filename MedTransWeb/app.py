"""The MedTrans browser app: ``python -m MedTransWeb [--port PORT] [--host HOST]`` or ``medtrans web``.

It serves :class:`~MedTransWeb.webapp.MedTransWebApp` on this machine only (127.0.0.1) unless another host is
asked for, and prints the URL to open. This module imports no VTK or trame until the server starts, so
``--help`` and option errors are immediate.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from typing import NoReturn

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def preload_core(**_) -> None:
    """Import torch and the translation code in the background, so the first Translate click does not wait."""
    threading.Thread(target=importlib.import_module, args=("MedTransCore.translate",), daemon=True).start()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medtrans web", description="Start the MedTrans browser app.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--max-upload-mb", type=int, default=1024, help="largest accepted upload in MB")
    return parser


def main(argv: list[str] | None = None) -> NoReturn:
    """Start the server and print its URL; block until it is stopped (Ctrl+C, SIGTERM), then exit the process.

    Once the server has stopped, a translation still running is cancelled and the process exits at once
    (``os._exit``): the interpreter's own teardown of thousands of VTK/MRML objects takes seconds and has
    nothing left to save.
    """
    args = build_parser().parse_args(argv)
    from .uploads import UploadLimits
    from .webapp import MedTransWebApp, logger

    # trame parses sys.argv itself; give it only what it needs (no browser, no stray options).
    os.environ["TRAME_ARGS"] = "--server"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    app = MedTransWebApp(limits=UploadLimits(max_bytes=args.max_upload_mb * 1024**2))

    def announce(**_) -> None:
        print(f"MedTrans web app running at http://{args.host}:{app.server.port}/", flush=True)

    app.server.controller.on_server_ready.add(announce)
    app.server.controller.on_server_ready.add(preload_core)
    # timeout=0: keep serving when the last browser tab closes (trame's default stops after 300 s).
    app.server.start(port=args.port, host=args.host, open_browser=False, show_connection_info=False, timeout=0)
    app.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
