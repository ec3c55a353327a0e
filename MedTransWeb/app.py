"""The MedTrans browser app: ``medtrans web``, ``medtrans-web`` or ``python -m MedTransWeb`` (same options).

It serves :class:`~MedTransWeb.webapp.MedTransWebApp` on this machine only (127.0.0.1) unless another host is
asked for, and prints the URL to open. This module imports no VTK or trame until the server starts, so
``--help`` and option errors are immediate, and a missing ``web`` extra is a one-line error naming it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from typing import NoReturn

from MedTransCore.errors import MedTransError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_UPLOAD_MB = 1024
DESCRIPTION = "Start the MedTrans browser app (trame-slicer) and print its URL."
EPILOG = """\
Open the printed URL in a browser. The app serves this machine only unless
--host names another address; an upload larger than --max-upload-mb is refused
in the page before it is sent. The same options work with medtrans-web and
python -m MedTransWeb.

example:
  medtrans web --port 8080 --max-upload-mb 2048
"""
# Top-level modules that the `web` extra brings (trame-slicer[standalone], slicer-core, vtk).
WEB_EXTRA_MODULES = frozenset(
    ("trame", "trame_client", "trame_server", "trame_slicer", "trame_vuetify", "wslink", "slicer", "vtk", "vtkmodules")
)
WEB_EXTRA_HINT = 'the browser front end needs the web extra: pip install "medtrans[web]"'


def preload_core(**_) -> None:
    """Import torch and the translation code in the background, so the first Translate click does not wait."""
    threading.Thread(target=importlib.import_module, args=("MedTransCore.translate",), daemon=True).start()


# argparse names the type in its message ("invalid port value: 'x'"): hence these function names.
def port(text: str) -> int:
    number = int(text)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {number}")
    return number


def megabytes(text: str) -> int:
    size = int(text)
    if size <= 0:
        raise argparse.ArgumentTypeError(f"the upload limit must be a positive number of MB, got {size}")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's options, shared by ``medtrans web`` and ``python -m MedTransWeb``."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine)")
    parser.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument(
        "--max-upload-mb",
        type=megabytes,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest accepted upload in MB (default {DEFAULT_MAX_UPLOAD_MB})",
    )


def build_parser(prog: str = "medtrans-web") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return parser


def load_web_app():
    """Import the server side (trame, VTK, MRML); a missing ``web`` extra becomes a ``MedTransError`` naming it.

    Raises:
        MedTransError: a module of the ``web`` extra is not installed.
    """
    try:
        return importlib.import_module("MedTransWeb.webapp")
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in WEB_EXTRA_MODULES:
            raise MedTransError(f"{WEB_EXTRA_HINT} (missing: {missing})") from exc
        raise


def serve(args: argparse.Namespace) -> NoReturn:
    """Start the server and print its URL; block until it is stopped (Ctrl+C, SIGTERM), then exit the process.

    Once the server has stopped, a translation still running is cancelled and the process exits at once
    (``os._exit``): the interpreter's own teardown of thousands of VTK/MRML objects takes seconds and has
    nothing left to save.

    Args:
        args: parsed options of :func:`add_arguments` (``host``, ``port``, ``max_upload_mb``).

    Raises:
        MedTransError: the ``web`` extra is not installed (nothing is started).
    """
    webapp = load_web_app()
    from .uploads import UploadLimits

    # trame parses sys.argv itself; give it only what it needs (no browser, no stray options).
    os.environ["TRAME_ARGS"] = "--server"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    webapp.logger.setLevel(logging.INFO)
    app = webapp.MedTransWebApp(limits=UploadLimits(max_bytes=args.max_upload_mb * 1024**2))

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


def main(argv: list[str] | None = None) -> NoReturn:
    """``medtrans-web`` / ``python -m MedTransWeb``: parse the options and :func:`serve`; errors are one line."""
    args = build_parser().parse_args(argv)
    try:
        serve(args)
    except MedTransError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
