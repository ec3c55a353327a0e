"""``python -m MedTransWeb [--port PORT] [--host HOST]``."""

from MedTransWeb.app import main

raise SystemExit(main())
