"""Log lines as text (gunicorn's format) or, with LOG_FORMAT=json, one JSON object per line.

A JSON line has ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``pid``,
every field passed as ``extra=`` (``model_sha1``, ``reason``…), and ``exception``
when there is a traceback, so a log pipeline can filter failed jobs by their reason.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def use_json_logs(*loggers: logging.Logger) -> None:
    """Give every handler of ``loggers`` (and the root logger) the JSON formatter."""
    formatter = JsonFormatter()
    for logger in (logging.getLogger(), *loggers):
        for handler in logger.handlers:
            handler.setFormatter(formatter)
