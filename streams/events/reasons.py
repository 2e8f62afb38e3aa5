"""Machine-readable reasons a record or event is dead-lettered (a closed set)."""

from enum import StrEnum


class Reason(StrEnum):
    EMPTY = "empty"  # zero-length record value
    OVERSIZED = "oversized"  # larger than the configured max_record_bytes
    UNDECODABLE = "undecodable"  # not UTF-8 JSON, or nested beyond the parser's limit
    UNKNOWN_SCHEMA = "unknown_schema"  # a "schema" value this worker does not know
    INVALID_EVENT = "invalid_event"  # JSON, known schema, but fails its contract
    INVALID_BATCH = "invalid_batch"  # a column batch whose arrays differ in length
    DUPLICATE_EVENT_ID = "duplicate_event_id"  # the same event id twice in one record
    INTERNAL_ERROR = "internal_error"  # a bug in the worker; the input is kept for replay
    UNDELIVERABLE = "undeliverable"  # an alert no receiver route could deliver after retries (notifier)
