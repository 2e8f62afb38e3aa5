"""The local broker's pure helpers."""

from __future__ import annotations

import base64
import uuid

import pytest

from streams.broker import local
from streams.broker.local import cluster_id


def test_cluster_ids_are_16_bytes_of_url_safe_base64_and_never_start_with_a_dash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first uuid encodes to an id starting with "-" (0xf8 -> "-"): it must be skipped.
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    fine = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    draws = iter([dashed, fine])
    monkeypatch.setattr(local.uuid, "uuid4", lambda: next(draws))
    cid = cluster_id()
    assert cid == base64.urlsafe_b64encode(fine.bytes).decode().rstrip("=")
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_random_cluster_ids_differ() -> None:
    ids = {cluster_id() for _ in range(500)}
    assert len(ids) == 500
    assert not any(i.startswith("-") for i in ids)
