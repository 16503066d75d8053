"""How the server logs: one format for `stackrag run` and each of its workers."""

from __future__ import annotations

import logging


def configure(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: the server's own calls to its model process are not news.
    logging.getLogger("httpx").setLevel(logging.WARNING)
