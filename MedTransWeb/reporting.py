"""Page actions that never take the server down: a failure becomes an ``error: ...`` status line."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from MedTransCore.errors import MedTransError

logger = logging.getLogger("MedTransWeb")


def reported(handler: Callable) -> Callable:
    """Run an async page action so that any failure becomes an ``error: ...`` status line (``report_error``)."""

    @functools.wraps(handler)
    async def wrapper(self, *args, **kwargs):
        try:
            return await handler(self, *args, **kwargs)
        except MedTransError as error:
            self.report_error(str(error))
        except Exception as error:  # noqa: BLE001 - a bug must not take the server down: log it, show it
            logger.exception("unexpected failure in %s", handler.__name__)
            self.report_error(f"unexpected {type(error).__name__}: {error}")
        return None

    return wrapper


def error_text(error: BaseException | None) -> str:
    """What the page says about a failed run: a MedTrans error's own message, else the exception's type too."""
    return str(error) if isinstance(error, MedTransError) else f"{type(error).__name__}: {error}"
