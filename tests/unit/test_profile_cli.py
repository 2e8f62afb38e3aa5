"""Tests of streams.profile_cli: reference profiles built from CSV, JSON lines and Parquet files."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from streams import profile_cli
from streams.config import ConfigError, Settings
from streams.core.drift.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from streams.profile_cli import build_profile, cmd_profile

N_ROWS = 300
COLUMNS = ("id", "amount", "age", "country", "score", "label")


def training_rows(n: int = N_ROWS, seed: int = 0) -> list[dict[str, Any]]:
    """Rows with ints, floats, strings and missing values (``None``) in several columns."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": i,
                "amount": None if i % 17 == 0 else round(float(rng.normal(100.0, 15.0)), 4),
                "age": int(rng.integers(18, 90)),
                "country": None if i % 23 == 0 else str(rng.choice(["fr", "de", "us", "jp"])),
                "score": round(float(rng.random()), 6),
                "label": str(rng.choice(["fraud", "ok"], p=[0.2, 0.8])),
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if v is None else v for k, v in row.items()})  # empty cell = missing
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    lines = []
    for i, row in enumerate(rows):
        # a missing value is sometimes null, sometimes an absent key: both are missing
        obj = {k: v for k, v in row.items() if v is not None or i % 2 == 0}
        lines.append(json.dumps(obj))
        if i == 5:
            lines.append("")  # blank lines are skipped
    path.write_text("\n".join(lines) + "\n")
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=128)
    return path


def build(path: Path, **kw: Any) -> ReferenceProfile:
    args: dict[str, Any] = {
        "model": "fraud",
        "version": "v3",
        "prediction": None,
        "exclude": set(),
        "created_ms": 7,
    }
    args.update(kw)
    prof: ReferenceProfile = build_profile(path, **args)
    return prof


def without_source(prof: ReferenceProfile) -> ReferenceProfile:
    return dataclasses.replace(prof, source="")


# ----------------------------------------------------------------------------- formats


def test_csv_jsonl_and_parquet_give_the_same_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_cli, "CHUNK_ROWS", 64)  # several chunks per file
    rows = training_rows()
    from_csv = build(write_csv(tmp_path / "train.csv", rows))
    from_jsonl = build(write_jsonl(tmp_path / "train.jsonl", rows))
    assert without_source(from_jsonl) == without_source(from_csv)
    assert (from_csv.source, from_jsonl.source) == ("file:train.csv", "file:train.jsonl")

    assert from_csv.n_events == N_ROWS
    assert set(from_csv.features) == set(COLUMNS)
    amount, age, country, label = (from_csv.features[k] for k in ("amount", "age", "country", "label"))
    assert isinstance(amount, NumericProfile) and isinstance(age, NumericProfile)
    assert isinstance(country, CategoricalProfile) and isinstance(label, CategoricalProfile)
    n_amount = sum(r["amount"] is not None for r in rows)
    assert amount.count == n_amount and amount.missing_rate == pytest.approx(1 - n_amount / N_ROWS)
    assert age.count == N_ROWS and age.missing_rate == 0.0
    assert age.min == min(r["age"] for r in rows) and age.max == max(r["age"] for r in rows)
    n_country = sum(r["country"] is not None for r in rows)
    assert country.count == n_country and set(country.categories) == {"fr", "de", "us", "jp"}
    assert from_csv.prediction is None
    assert (from_csv.model, from_csv.model_version, from_csv.created_ms) == ("fraud", "v3", 7)


def test_parquet_gives_the_same_profile_as_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_cli, "CHUNK_ROWS", 64)
    rows = training_rows()
    from_parquet = build(write_parquet(tmp_path / "train.parquet", rows), prediction="score")
    from_csv = build(write_csv(tmp_path / "train.csv", rows), prediction="score")
    assert without_source(from_parquet) == without_source(from_csv)
    assert from_parquet.source == "file:train.parquet"


def test_the_profile_does_not_depend_on_the_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", training_rows())
    whole = build(path)
    monkeypatch.setattr(profile_cli, "CHUNK_ROWS", 7)
    chunked = build(path)

    def rounded(fp: Any) -> Any:  # means and stds are merged per chunk: equal up to float rounding
        if isinstance(fp, NumericProfile):
            return dataclasses.replace(fp, mean=round(fp.mean or 0.0, 9), std=round(fp.std or 0.0, 9))
        return fp

    assert {k: rounded(v) for k, v in chunked.features.items()} == {
        k: rounded(v) for k, v in whole.features.items()
    }
    assert (chunked.sample, chunked.n_events) == (whole.sample, whole.n_events)


# ----------------------------------------------------------------------------- --exclude, --prediction


def test_prediction_and_excluded_columns_are_not_features(tmp_path: Path) -> None:
    rows = training_rows()
    path = write_csv(tmp_path / "train.csv", rows)
    prof = build(path, prediction="score", exclude={"id", "label", "not_a_column"})
    assert set(prof.features) == {"amount", "age", "country"}
    assert isinstance(prof.prediction, NumericProfile)
    assert prof.prediction.count == N_ROWS
    assert prof.prediction.mean == pytest.approx(np.mean([r["score"] for r in rows]))
    assert set(prof.sample) == {"amount", "age", "country"}


def test_a_categorical_prediction_column(tmp_path: Path) -> None:
    rows = training_rows()
    prof = build(write_jsonl(tmp_path / "train.jsonl", rows), prediction="label", exclude={"id"})
    assert isinstance(prof.prediction, CategoricalProfile)
    share = sum(r["label"] == "fraud" for r in rows) / N_ROWS
    assert prof.prediction.categories["fraud"] == pytest.approx(share, abs=1e-3)
    assert "label" not in prof.features and "id" not in prof.features and "score" in prof.features


def test_cmd_profile_build_splits_exclude_and_writes_the_profile(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", training_rows())
    out = tmp_path / "fraud.profile.json"
    args = SimpleNamespace(
        action="build",
        path=str(path),
        model="fraud",
        version=None,
        prediction="score",
        exclude="id,,label",
        out=str(out),
        publish=False,
    )
    assert cmd_profile(args, Settings()) == 0  # no --publish: nothing reaches Kafka
    prof = ReferenceProfile.from_json(out.read_bytes())
    assert set(prof.features) == {"amount", "age", "country"}
    assert prof.model == "fraud" and prof.model_version is None and prof.prediction is not None


# ----------------------------------------------------------------------------- errors


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(ConfigError, match=re.escape(f"{path}: no such file")):
        build(path)
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        build(tmp_path)  # a directory is not a file either


def test_an_unknown_suffix_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: unknown format '.txt'")):
        build(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("empty.csv", ""), ("header_only.csv", "a,b\n"), ("empty.jsonl", ""), ("blank.jsonl", "\n  \n")],
)
def test_an_empty_file_is_a_config_error_naming_it(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: no rows")):
        build(path)


def test_an_empty_parquet_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], type=pa.float64())}), path)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: no rows")):
        build(path)


@pytest.mark.parametrize("line", ["[1, 2]", '"text"', "3", "null"])
def test_a_jsonl_line_that_is_not_an_object_names_its_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n\n' + line + '\n{"a": 2}\n')  # line 3: blank lines count
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: expected an object")):
        build(path)


def test_a_jsonl_line_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}:2: not JSON")):
        build(path)
