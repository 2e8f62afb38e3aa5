"""De-duplication stage: remember which notifications receivers acknowledged.

Alert events reach the notifier *at least once*: Kafka redelivers what was
consumed but not committed when a worker restarts or a partition moves, and a
topic may be re-read on purpose. Without a memory, each replay would page the
on-call again. Like Alertmanager's notification log (``nflog``) consulted by
its ``DedupStage``, the notifier asks the :class:`DeliveryLog` before sending
(``has(key)``) and tells it after (``record(key, at_ms)``), keyed by the
notification's idempotency key (alert fingerprint, status, start, end,
receiver; see :func:`streams.notify.channel.idempotency_key`).

Why record only *after* the receiver acknowledged
-------------------------------------------------
The two orders fail differently when the process dies between the two steps:

* record, then send: a crash in between leaves the key recorded and the
  notification never sent. On restart the replay is suppressed: the alert is
  **lost**, silently -- the one failure an alerting path must not have.
* send, then record (this module's contract): a crash in between leaves the
  notification sent and not recorded. On restart it is **sent again**, with the
  same ``Idempotency-Key`` (the key is derived from the alert, not drawn at
  random). A receiver that de-duplicates (a webhook keyed on
  ``Idempotency-Key``, an email store on ``Message-ID``, Alertmanager on the
  label set) shows no duplicate; one that does not (a Slack incoming webhook)
  shows the message twice.

So delivery is at-least-once, and exactly-once in *effect* wherever the
receiver de-duplicates; the window for a duplicate is one send's duration per
crash. Exactly-once would need the receiver and the log in one transaction,
which no notification API offers. :class:`FileDeliveryLog` ``fsync``\\ s each
record before returning, so a record that returned survives power loss, and
the notifier should commit the alert event's Kafka offset only after the
record (then a crash anywhere replays at most the in-flight events, which the
log filters).

Retention: a key is only needed while its alert event can still be replayed
(the alert topic's retention, or the consumer's maximum lag). Older keys are
forgotten with :meth:`DeliveryLog.forget_before`, which bounds the log's size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

__all__ = ["DeliveryLog", "FileDeliveryLog", "MemoryDeliveryLog"]

log = logging.getLogger(__name__)


@runtime_checkable
class DeliveryLog(Protocol):
    """Which idempotency keys receivers acknowledged, and when (epoch milliseconds)."""

    def has(self, key: str) -> bool:
        """Whether ``key`` was recorded (and not yet forgotten)."""
        ...

    def record(self, key: str, at_ms: int) -> None:
        """Remember that ``key`` was acknowledged at ``at_ms``; durable when this returns."""
        ...

    def forget_before(self, cutoff_ms: int) -> int:
        """Forget keys recorded before ``cutoff_ms`` (``now - retention``); return how many."""
        ...

    def close(self) -> None:
        """Release resources; the log is not used again."""
        ...

    def __len__(self) -> int:
        """How many keys are remembered."""
        ...


class MemoryDeliveryLog:
    """A :class:`DeliveryLog` in a dict: for tests, and for a notifier that may re-notify after a restart.

    Examples
    --------
    >>> d = MemoryDeliveryLog()
    >>> d.record("k1", 1_000); d.record("k2", 5_000)
    >>> d.has("k1"), d.forget_before(2_000), d.has("k1"), len(d)
    (True, 1, False, 1)
    """

    def __init__(self) -> None:
        self._at: dict[str, int] = {}
        self._lock = threading.Lock()

    def has(self, key: str) -> bool:
        """Whether ``key`` was recorded and not forgotten."""
        with self._lock:
            return key in self._at

    def record(self, key: str, at_ms: int) -> None:
        """Remember ``key``, acknowledged at ``at_ms`` (a later record of it keeps the later time)."""
        with self._lock:
            self._at[key] = max(at_ms, self._at.get(key, at_ms))

    def forget_before(self, cutoff_ms: int) -> int:
        """Forget keys recorded before ``cutoff_ms``; return how many were forgotten."""
        with self._lock:
            old = [k for k, at in self._at.items() if at < cutoff_ms]
            for k in old:
                del self._at[k]
            return len(old)

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._at)


class FileDeliveryLog:
    """A :class:`DeliveryLog` persisted as an append-only JSON-lines file.

    Each record appends ``{"k": key, "at": at_ms}`` and ``fsync``\\ s before
    returning. At open, the file is read back; a torn last line (a crash
    during an append, whose ``record`` therefore never returned) is cut off,
    which at worst re-sends that one notification. Lines of forgotten or
    repeated keys accumulate until they outnumber live ones (and at least
    ``compact_min_lines`` of them); then the file is rewritten with only live
    keys -- to a temporary file, fsynced, atomically renamed over the log, and
    the directory fsynced -- so a crash during compaction leaves either the old
    or the new file, never a mix.

    Parameters
    ----------
    path
        The log file; created (with its directory) when missing.
    compact_min_lines
        Dead lines tolerated before compacting regardless of ratio; avoids
        rewriting a small file on every forget.

    Raises
    ------
    ValueError
        A line other than the last is not a valid record: the file is not a
        delivery log, or was edited; better to stop than to guess which keys
        were delivered.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "delivered.jsonl")
    >>> d = FileDeliveryLog(path); d.record("k1", 1_000); d.close()
    >>> FileDeliveryLog(path).has("k1")
    True
    """

    def __init__(self, path: str | os.PathLike[str], *, compact_min_lines: int = 1024) -> None:
        self._path = Path(path)
        self._compact_min_lines = compact_min_lines
        self._lock = threading.Lock()
        self._at: dict[str, int] = {}
        self._lines = 0
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._load()
        self._file: IO[bytes] = open(self._path, "ab")  # noqa: SIM115 -- held open for the log's lifetime
        if self._lines > len(self._at):
            self._compact()

    @property
    def path(self) -> Path:
        """The log file."""
        return self._path

    def _load(self) -> None:
        try:
            data = self._path.read_bytes()
        except FileNotFoundError:
            return
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            log.warning("%s: dropping a torn last record (%d bytes) left by a crash during an append",
                        self._path, len(data) - complete)
            with open(self._path, "r+b") as f:
                f.truncate(complete)
                f.flush()
                os.fsync(f.fileno())
        for number, line in enumerate(data[:complete].splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key, at = entry["k"], entry["at"]
                if not isinstance(key, str) or type(at) is not int:
                    raise TypeError("k must be a string and at an integer")
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self._path}:{number}: not a delivery-log record ({exc})") from None
            self._at[key] = max(at, self._at.get(key, at))
            self._lines += 1

    def has(self, key: str) -> bool:
        """Whether ``key`` was recorded and not forgotten."""
        with self._lock:
            return key in self._at

    def record(self, key: str, at_ms: int) -> None:
        """Append and fsync the record of ``key``; when this returns it survives a crash or power loss."""
        line = json.dumps({"k": key, "at": int(at_ms)}, separators=(",", ":")).encode("utf-8") + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._at[key] = max(int(at_ms), self._at.get(key, int(at_ms)))
            self._lines += 1

    def forget_before(self, cutoff_ms: int) -> int:
        """Forget keys recorded before ``cutoff_ms``, compacting the file when dead lines dominate."""
        with self._lock:
            old = [k for k, at in self._at.items() if at < cutoff_ms]
            for k in old:
                del self._at[k]
            dead = self._lines - len(self._at)
            if dead >= self._compact_min_lines and dead >= len(self._at):
                self._compact()
            return len(old)

    def compact(self) -> None:
        """Rewrite the file with only the keys remembered now (also done automatically)."""
        with self._lock:
            self._compact()

    def _compact(self) -> None:
        tmp = self._path.with_name(self._path.name + ".compacting")
        with open(tmp, "wb") as f:
            for key, at in self._at.items():
                f.write(json.dumps({"k": key, "at": at}, separators=(",", ":")).encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._file.close()
        os.replace(tmp, self._path)
        _fsync_dir(self._path.parent)
        self._file = open(self._path, "ab")  # noqa: SIM115
        self._lines = len(self._at)

    def close(self) -> None:
        """Close the file (records are already durable)."""
        with self._lock:
            self._file.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._at)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
