"""``python -m MedTransWeb [--host HOST] [--port PORT] [--max-upload-mb MB]`` (the same as ``medtrans web``)."""

from MedTransWeb.app import main

raise SystemExit(main())
