"""One JSON line per notification on a text stream: for demos, tests and log shippers.

The line is the webhook's envelope (``version``, ``idempotency_key``,
``receiver``, ``alert``), key-sorted and compact, so ``jq`` and a log
pipeline that already parses JSON lines (Vector, Fluent Bit) can consume it
and forward it elsewhere.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from streams.notify.channel import DeliveryError, Notification, envelope
from streams.notify.webhook import encode_json

__all__ = ["StdoutChannel"]


class StdoutChannel:
    """Write each notification as one JSON line to ``stream`` (standard output by default).

    Parameters
    ----------
    name
        The receiver's name.
    stream
        Where to write; :data:`sys.stdout` *at the time of each send* when
        None, so that pytest's capture and a redirected stdout are honoured.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> ch = StdoutChannel("console", out)
    >>> ch.send(Notification("k1", "console", {"status": "firing"}))
    >>> out.getvalue()
    '{"alerts":[{"status":"firing"}],"group_key":"","idempotency_key":"k1","receiver":"console","version":"driftline.notification/v2"}\\n'
    """

    def __init__(self, name: str = "stdout", stream: TextIO | None = None) -> None:
        self._name = name
        self._stream = stream
        self._lock = threading.Lock()  # one line per write even when receivers deliver from several threads

    @property
    def name(self) -> str:
        """The receiver's name."""
        return self._name

    def send(self, n: Notification) -> None:
        """Write and flush one line; a closed or broken stream is not retryable, other I/O errors are."""
        line = encode_json(envelope(n), f"stdout {self._name}").decode("utf-8") + "\n"
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            with self._lock:
                stream.write(line)
                stream.flush()
        except BrokenPipeError:
            raise DeliveryError(f"stdout {self._name}: broken pipe (reader went away)", False) from None
        except ValueError as exc:  # I/O on a closed file
            raise DeliveryError(f"stdout {self._name}: {exc}", False) from None
        except OSError as exc:
            raise DeliveryError(f"stdout {self._name}: {type(exc).__name__}: {exc}", True) from None

    def close(self) -> None:
        """Flush; the stream belongs to the caller and stays open."""
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            with self._lock:
                stream.flush()
        except (OSError, ValueError):
            pass
