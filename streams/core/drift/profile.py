"""Reference profile: what a model's inputs and outputs looked like when they were "right".

Univariate drift is tested from *binned counts* against the reference's bins
(:mod:`streams.core.drift.histogram` folds a window into those bins), so the
per-window state written to Kafka after every flush is a few hundred integers
per model instead of raw samples. The profile therefore stores, per feature,
the bins and their reference proportions, not the reference data:

* a numeric feature gets ``n_bins`` equal-mass bins whose interior edges are
  reference quantiles (deduplicated, so a discrete feature gets fewer bins).
  Bins are right-closed, ``(-inf, e0], (e0, e1], ..., (e_last, inf)``, which
  is exactly ``np.searchsorted(edges, x, side="left")``. Quantile bins are the
  usual choice for PSI (Siddiqi, *Credit Risk Scorecards*, Wiley 2006) and
  give every bin enough reference mass for the tests of
  :mod:`streams.core.drift.twosample`;
* a categorical feature (strings, booleans as ``"true"``/``"false"``) gets the
  proportions of its ``top_k`` most frequent categories and of ``other``.

Proportions are floored at :data:`PROPORTION_FLOOR` and renormalised, so that
PSI and the chi-squared test never divide by an empty reference bin: a bin the
reference never filled (the tail above a constant feature, the ``other`` of a
feature with few categories) gets a tiny but positive expected mass. A
current window then pays a large but finite PSI for filling it, which is the
behaviour wanted.

The profile also keeps a row-aligned *sample* of up to ``sample_rows``
reference rows, the reference side of the multivariate domain classifier
(:mod:`streams.core.drift.domain`).

Serialisation is versioned JSON (``"schema": "driftline.profile/v1"``), read
back by a strict decoder: profiles travel through a Kafka topic and may be
produced by hand (``driftline profile publish``), so an unknown schema or
field, a wrong type, a NaN or a duplicated key raises ``ValueError`` naming
the field instead of producing a profile that would mis-test every window.

:class:`ProfileBuilder` builds a profile as a fold over column batches. Bin
edges come from a reservoir of at most ``reservoir`` values per feature,
chosen by *bottom-k sampling* (keep the rows of the ``k`` smallest random
keys; Cohen and Kaplan, *Summarizing data using bottom-k sketches*, PODC
2007): each row's key is a hash of ``(seed, row index)``, so the sample -- and
the profile -- depend only on the seed and the rows, not on how they were
split into batches. Quantiles and proportions are exact while a feature has
at most ``reservoir`` values.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streams.core.batches import top_class
from streams.core.columns import FeatureColumns, is_number, numeric_column
from streams.core.drift._json import as_count, as_finite, as_int, as_label, as_object, as_str, exact_keys

__all__ = [
    "PREDICTION",
    "PROPORTION_FLOOR",
    "SCHEMA",
    "CategoricalProfile",
    "FeatureProfile",
    "NumericProfile",
    "ProfileBuilder",
    "ReferenceProfile",
    "batch_len",
    "category_label",
    "floor_proportions",
    "numeric_column",
    "row_keys",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
UIntArray = npt.NDArray[np.uint64]

#: Schema tag of the profile JSON.
SCHEMA: Final = "driftline.profile/v1"
#: Name under which the prediction distribution is tracked next to the features.
PREDICTION: Final = "__prediction__"
#: Smallest proportion of a reference bin or category (before renormalisation).
#: 1e-4 is below any bin mass a 20-bin or top-50 profile can hold legitimately,
#: yet keeps ``ln(p_cur / p_ref)`` finite (at most ~9.2 per bin).
PROPORTION_FLOOR: Final = 1e-4

_TOL_SUM = 1e-6  # tolerance on "proportions sum to one"
_FLOAT_INT_LIMIT = 2.0**53  # integers below this are exact in float64
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_LABEL_CAPACITY_MIN = 1_000  # categories counted exactly per feature while building (at least)

_PROFILE_KEYS = frozenset(
    {"schema", "model", "model_version", "created_ms", "source", "n_events", "features", "prediction",
     "sample"}
)
_NUMERIC_KEYS = frozenset(
    {"kind", "edges", "proportions", "count", "mean", "std", "missing_rate", "min", "max"}
)
_CATEGORICAL_KEYS = frozenset({"kind", "categories", "other", "count", "missing_rate"})


# --------------------------------------------------------------------------------------------
# Value helpers shared with the window histogram
# --------------------------------------------------------------------------------------------


_is_number = is_number


def category_label(v: Any) -> str | None:
    """Category label of one value; ``None`` for a missing one.

    Strings are their own label, booleans are ``"true"``/``"false"`` and
    numbers are canonical (``3`` and ``3.0`` are both ``"3"``), so that the
    label of a value does not depend on how the client encoded it. NaN is
    missing. A probability map (a classifier's output) is its top class.

    >>> [category_label(v) for v in ("a", True, 3, 3.0, 0.5, None, float("nan"), {"x": 0.2, "y": 0.8})]
    ['a', 'true', '3', '3', '0.5', None, None, 'y']
    >>> category_label([1])
    Traceback (most recent call last):
    ...
    ValueError: unsupported value type list (numbers, strings, booleans, None or probability maps)
    """
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if _is_number(v):
        x = float(v)
        if math.isnan(x):
            return None
        if x.is_integer() and abs(x) < _FLOAT_INT_LIMIT:
            return str(int(x))
        return repr(x)
    if isinstance(v, Mapping):
        return top_class(v) if v else None
    raise ValueError(
        f"unsupported value type {type(v).__name__} (numbers, strings, booleans, None or probability maps)"
    )


def _splitmix64(z: UIntArray) -> UIntArray:
    """The SplitMix64 finaliser (Steele, Lea and Flood, OOPSLA 2014): a bijection of uint64."""
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return z ^ (z >> _U64(31))


def row_keys(seed: int, start: int, n: int, bits: int = 64) -> UIntArray:
    """Pseudo-random keys of rows ``start .. start + n - 1`` of a stream seeded by ``seed``.

    Key ``i`` is SplitMix64 of ``mix(seed) + (i + 1) * golden``: a counter-based
    generator, so the key of a row depends only on ``(seed, i)`` and bottom-k
    samples built on these keys do not depend on batch boundaries. With
    ``bits=64`` distinct rows of one seed get distinct keys (the finaliser is a
    bijection); ``bits=53`` keeps keys exact in JSON numbers and float64.

    >>> k = row_keys(7, 0, 5)
    >>> bool((row_keys(7, 2, 3) == k[2:]).all()), len(set(k.tolist()))
    (True, 5)
    >>> int(row_keys(7, 0, 3, bits=53).max()) < 2**53
    True
    """
    if not 1 <= bits <= 64:
        raise ValueError(f"bits: must be in [1, 64], got {bits}")
    base = _splitmix64(np.array([seed % 2**64], dtype=_U64))[0]
    idx = np.arange(start + 1, start + n + 1, dtype=_U64)
    with np.errstate(over="ignore"):
        keys = _splitmix64(base + idx * _GOLDEN)
    return keys >> _U64(64 - bits) if bits < 64 else keys


def floor_proportions(counts: npt.ArrayLike) -> tuple[float, ...]:
    """Proportions of ``counts``, floored at :data:`PROPORTION_FLOOR` and renormalised.

    An all-zero (or empty-total) input gives uniform proportions.

    >>> [round(p, 6) for p in floor_proportions([0, 3, 1])]
    [0.0001, 0.749925, 0.249975]
    """
    c = np.asarray(counts, dtype=np.float64)
    total = float(c.sum())
    p = c / total if total > 0 else np.full(len(c), 1.0 / max(len(c), 1))
    p = np.maximum(p, PROPORTION_FLOOR)
    p = p / p.sum()
    return tuple(float(v) for v in p)


# --------------------------------------------------------------------------------------------
# Profile data classes
# --------------------------------------------------------------------------------------------


def _check_proportions(values: Sequence[float], field: str) -> None:
    for i, v in enumerate(values):
        if not (isinstance(v, float) and math.isfinite(v) and v >= 0.0):
            raise ValueError(f"{field}[{i}]: must be a finite float >= 0, got {v!r}")
    total = math.fsum(values)
    if abs(total - 1.0) > _TOL_SUM:
        raise ValueError(f"{field}: must sum to 1, got {total!r}")


def _check_rate(v: Any, field: str) -> None:
    if not (isinstance(v, float) and 0.0 <= v <= 1.0):
        raise ValueError(f"{field}: must be a float in [0, 1], got {v!r}")


@dataclass(frozen=True, slots=True)
class NumericProfile:
    """Reference distribution of a numeric feature, as quantile bins.

    Parameters
    ----------
    edges
        Interior bin edges, strictly increasing: bin ``i`` is ``(edges[i-1], edges[i]]``
        with ``edges[-1] = -inf`` and ``edges[len] = +inf`` (``np.searchsorted(edges, x)``).
    proportions
        Reference proportion of each bin (``len(edges) + 1`` of them), floored at
        :data:`PROPORTION_FLOOR` and renormalised.
    count
        Number of present (non-missing, finite) reference values.
    mean, std
        Mean and population standard deviation of those values (``None`` when ``count`` is 0).
    missing_rate
        Fraction of reference rows where the feature was missing, NaN or infinite.
    min, max
        Extremes of the present values (``None`` when ``count`` is 0).

    Examples
    --------
    >>> p = NumericProfile(edges=(0.0,), proportions=(0.5, 0.5), count=10, mean=0.0, std=1.0,
    ...                    missing_rate=0.0, min=-2.0, max=2.0)
    >>> p.n_bins
    2
    >>> NumericProfile(edges=(1.0, 0.0), proportions=(0.2, 0.3, 0.5), count=10, mean=0.0, std=1.0,
    ...                missing_rate=0.0, min=-2.0, max=2.0)
    Traceback (most recent call last):
    ...
    ValueError: edges: must be strictly increasing finite floats, got (1.0, 0.0)
    """

    edges: tuple[float, ...]
    proportions: tuple[float, ...]
    count: int
    mean: float | None
    std: float | None
    missing_rate: float
    min: float | None
    max: float | None

    def __post_init__(self) -> None:
        e = self.edges
        if (
            not isinstance(e, tuple)
            or not all(isinstance(v, float) and math.isfinite(v) for v in e)
            or any(a >= b for a, b in itertools.pairwise(e))
        ):
            raise ValueError(f"edges: must be strictly increasing finite floats, got {e!r}")
        if not isinstance(self.proportions, tuple) or len(self.proportions) != len(e) + 1:
            raise ValueError(f"proportions: must be a tuple of len(edges) + 1 = {len(e) + 1} floats")
        _check_proportions(self.proportions, "proportions")
        as_count(self.count, "count")
        _check_rate(self.missing_rate, "missing_rate")
        for name in ("mean", "std", "min", "max"):
            v = getattr(self, name)
            if self.count == 0:
                if v is not None:
                    raise ValueError(f"{name}: must be null when count is 0, got {v!r}")
            elif not (isinstance(v, float) and math.isfinite(v)):
                raise ValueError(f"{name}: must be a finite float, got {v!r}")
        std, lo, hi = self.std, self.min, self.max
        if std is not None and lo is not None and hi is not None and (std < 0.0 or lo > hi):
            raise ValueError(f"std, min, max: need std >= 0 and min <= max, got {std}, {lo}, {hi}")

    @property
    def kind(self) -> str:
        """``"numeric"``."""
        return "numeric"

    @property
    def n_bins(self) -> int:
        """Number of bins, ``len(edges) + 1``."""
        return len(self.edges) + 1


@dataclass(frozen=True, slots=True)
class CategoricalProfile:
    """Reference distribution of a categorical feature: top categories and the rest.

    Parameters
    ----------
    categories
        Proportion of each of the most frequent categories, most frequent first
        (ties by label), floored at :data:`PROPORTION_FLOOR` and renormalised
        together with ``other``. Proportions are of the *present* values.
    other
        Proportion of every other category (including those never seen).
    count
        Number of present (non-missing) reference values.
    missing_rate
        Fraction of reference rows where the feature was missing.

    Examples
    --------
    >>> p = CategoricalProfile(categories={"a": 0.7, "b": 0.2}, other=0.1, count=10, missing_rate=0.0)
    >>> p.n_bins
    3
    >>> CategoricalProfile(categories={"a": 0.7}, other=0.1, count=10, missing_rate=0.0)
    Traceback (most recent call last):
    ...
    ValueError: categories: must sum to 1, got 0.7999999999999999
    """

    categories: dict[str, float]
    other: float
    count: int
    missing_rate: float

    def __post_init__(self) -> None:
        if not isinstance(self.categories, dict):
            raise ValueError("categories: must be a dict of label -> proportion")
        for k in self.categories:
            as_label(k, "categories")
        fields = [(f"categories[{k!r}]", v) for k, v in self.categories.items()] + [("other", self.other)]
        for field, v in fields:
            if not (isinstance(v, float) and math.isfinite(v) and v >= 0.0):
                raise ValueError(f"{field}: must be a finite float >= 0, got {v!r}")
        total = math.fsum(v for _, v in fields)
        if abs(total - 1.0) > _TOL_SUM:
            raise ValueError(f"categories: must sum to 1, got {total!r}")
        as_count(self.count, "count")
        _check_rate(self.missing_rate, "missing_rate")

    @property
    def kind(self) -> str:
        """``"categorical"``."""
        return "categorical"

    @property
    def n_bins(self) -> int:
        """Number of bins: the categories and ``other``."""
        return len(self.categories) + 1

    @property
    def proportions(self) -> tuple[float, ...]:
        """Proportions in bin order: the categories, then ``other``."""
        return (*self.categories.values(), self.other)


FeatureProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class ReferenceProfile:
    """The reference of one model (version): per-feature bins, prediction bins and a row sample.

    Parameters
    ----------
    model
        Model name.
    model_version
        Version the profile describes; ``None`` means any version of the model.
    created_ms
        Creation time, epoch milliseconds (given by the caller; core code never reads a clock).
    source
        Free text saying where the reference came from, e.g. ``"file:train.csv"`` or ``"auto:first-5000"``.
    n_events
        Number of reference rows.
    features
        Profile of each feature by name.
    prediction
        Profile of the model's output (numbers, class names, or the top class of probability
        maps), or ``None`` when the reference had no predictions.
    sample
        Row-aligned sample of reference rows, column by column: floats (or ``None``) for numeric
        features, labels (or ``None``) for categorical ones.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> b = ProfileBuilder(n_bins=4, sample_rows=3)
    >>> b.add({"age": rng.normal(40, 10, 1000).tolist(), "city": ["paris", "rome"] * 500},
    ...       predictions=[{"yes": 0.9, "no": 0.1}] * 1000)
    >>> prof = b.build(model="churn", model_version="v1", created_ms=0, source="doc")
    >>> prof.features["age"].n_bins, prof.features["city"].categories
    (4, {'paris': 0.49995000499950004, 'rome': 0.49995000499950004})
    >>> ReferenceProfile.from_json(prof.to_json()) == prof
    True
    >>> len(prof.sample["age"]), prof.prediction.categories
    (3, {'yes': 0.9999000099990001})
    """

    model: str
    model_version: str | None
    created_ms: int
    source: str
    n_events: int
    features: dict[str, FeatureProfile]
    prediction: FeatureProfile | None
    sample: dict[str, list[float | str | None]]

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model: must be a non-empty string, got {self.model!r}")
        if self.model_version is not None and not isinstance(self.model_version, str):
            raise ValueError(f"model_version: must be a string or null, got {self.model_version!r}")
        as_count(self.created_ms, "created_ms")
        if not isinstance(self.source, str):
            raise ValueError(f"source: must be a string, got {self.source!r}")
        as_count(self.n_events, "n_events")
        if not isinstance(self.features, dict):
            raise ValueError("features: must be a dict of name -> profile")
        for name, fp in self.features.items():
            if not isinstance(name, str) or not name or name == PREDICTION:
                raise ValueError(f"features: invalid feature name {name!r} (non-empty, not {PREDICTION!r})")
            if not isinstance(fp, NumericProfile | CategoricalProfile):
                raise ValueError(f"features[{name!r}]: must be a NumericProfile or CategoricalProfile")
        pred = self.prediction
        if pred is not None and not isinstance(pred, NumericProfile | CategoricalProfile):
            raise ValueError("prediction: must be a NumericProfile, a CategoricalProfile or None")
        self._check_sample()

    def _check_sample(self) -> None:
        if not isinstance(self.sample, dict):
            raise ValueError("sample: must be a dict of feature -> column")
        rows: int | None = None
        first = ""
        for name, col in self.sample.items():
            fp = self.features.get(name)
            if fp is None:
                raise ValueError(f"sample[{name!r}]: not a feature of the profile")
            if not isinstance(col, list):
                raise ValueError(f"sample[{name!r}]: must be a list")
            if rows is None:
                rows, first = len(col), name
            elif len(col) != rows:
                raise ValueError(f"sample[{name!r}]: {len(col)} rows, sample[{first!r}] has {rows}")
            numeric = isinstance(fp, NumericProfile)
            for i, v in enumerate(col):
                ok = v is None or (
                    isinstance(v, float) and math.isfinite(v) if numeric else isinstance(v, str)
                )
                if not ok:
                    want = "a finite float or null" if numeric else "a string or null"
                    raise ValueError(f"sample[{name!r}][{i}]: must be {want}, got {v!r}")
        if rows is not None and rows > self.n_events:
            raise ValueError(f"sample: {rows} rows but n_events is {self.n_events}")

    @functools.cached_property
    def fingerprint(self) -> str:
        """Short content hash of :meth:`to_json`: window states remember which profile they are binned by."""
        return _digest(self.to_json())

    def to_json(self) -> bytes:
        """Serialise as ``driftline.profile/v1`` JSON (UTF-8 bytes, no NaN or infinity)."""
        doc = {
            "schema": SCHEMA,
            "model": self.model,
            "model_version": self.model_version,
            "created_ms": self.created_ms,
            "source": self.source,
            "n_events": self.n_events,
            "features": {k: _feature_doc(v) for k, v in self.features.items()},
            "prediction": None if self.prediction is None else _feature_doc(self.prediction),
            "sample": self.sample,
        }
        raw = json.dumps(doc, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()
        # The fingerprint is the digest of exactly these bytes: cache it (as the cached_property
        # would) so a caller that serialises first gets it without serialising again.
        self.__dict__.setdefault("fingerprint", _digest(raw))
        return raw

    @classmethod
    def from_json(cls, data: bytes | str) -> ReferenceProfile:
        """Parse :meth:`to_json` output strictly; ``ValueError`` names the first bad field."""
        try:
            doc = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"profile: not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ValueError("profile: must be a JSON object")
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"schema: unsupported {doc.get('schema')!r}, expected {SCHEMA!r}")
        exact_keys(doc, _PROFILE_KEYS, "profile")
        features_doc = as_object(doc["features"], "features")
        features = {name: _parse_feature(fd, f"features[{name!r}]") for name, fd in features_doc.items()}
        pred_doc = doc["prediction"]
        prediction = None if pred_doc is None else _parse_feature(pred_doc, "prediction")
        sample_doc = as_object(doc["sample"], "sample")
        sample: dict[str, list[float | str | None]] = {}
        for name, col in sample_doc.items():
            if not isinstance(col, list):
                raise ValueError(f"sample[{name!r}]: must be a list")
            # ints written by hand are accepted as floats; the constructor checks the rest
            sample[name] = [float(v) if type(v) is int else v for v in col]
        version = doc["model_version"]
        return cls(
            model=as_str(doc["model"], "model"),
            model_version=None if version is None else as_str(version, "model_version"),
            created_ms=as_int(doc["created_ms"], "created_ms"),
            source=as_str(doc["source"], "source"),
            n_events=as_int(doc["n_events"], "n_events"),
            features=features,
            prediction=prediction,
            sample=sample,
        )


def _digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def _feature_doc(fp: FeatureProfile) -> dict[str, Any]:
    if isinstance(fp, NumericProfile):
        return {
            "kind": "numeric",
            "edges": list(fp.edges),
            "proportions": list(fp.proportions),
            "count": fp.count,
            "mean": fp.mean,
            "std": fp.std,
            "missing_rate": fp.missing_rate,
            "min": fp.min,
            "max": fp.max,
        }
    return {
        "kind": "categorical",
        "categories": dict(fp.categories),
        "other": fp.other,
        "count": fp.count,
        "missing_rate": fp.missing_rate,
    }


# --------------------------------------------------------------------------------------------
# Strict JSON decoding
# --------------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"{k}: duplicated key")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"profile: {name} is not allowed (finite numbers only)")


def _opt_float(v: Any, field: str) -> float | None:
    return None if v is None else as_finite(v, field)


def _floats(v: Any, field: str) -> tuple[float, ...]:
    if not isinstance(v, list):
        raise ValueError(f"{field}: must be a list of numbers")
    return tuple(as_finite(x, f"{field}[{i}]") for i, x in enumerate(v))


def _parse_feature(doc: Any, where: str) -> FeatureProfile:
    d = as_object(doc, where)
    kind = d.get("kind")
    try:
        if kind == "numeric":
            exact_keys(d, _NUMERIC_KEYS, where)
            return NumericProfile(
                edges=_floats(d["edges"], "edges"),
                proportions=_floats(d["proportions"], "proportions"),
                count=as_int(d["count"], "count"),
                mean=_opt_float(d["mean"], "mean"),
                std=_opt_float(d["std"], "std"),
                missing_rate=as_finite(d["missing_rate"], "missing_rate"),
                min=_opt_float(d["min"], "min"),
                max=_opt_float(d["max"], "max"),
            )
        if kind == "categorical":
            exact_keys(d, _CATEGORICAL_KEYS, where)
            cats = as_object(d["categories"], "categories")
            return CategoricalProfile(
                categories={k: as_finite(v, f"categories[{k!r}]") for k, v in cats.items()},
                other=as_finite(d["other"], "other"),
                count=as_int(d["count"], "count"),
                missing_rate=as_finite(d["missing_rate"], "missing_rate"),
            )
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(where) else f"{where}.{msg}") from None
    raise ValueError(f"{where}.kind: must be 'numeric' or 'categorical', got {kind!r}")


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


class _BottomK:
    """Values of the rows with the ``k`` smallest keys seen so far (a uniform sample without replacement).

    New rows are buffered; once the buffer holds ``2k`` rows it is cut back to
    the ``k`` smallest keys and the largest kept key becomes a threshold that
    filters later rows, so the amortised cost per row is O(1).
    """

    __slots__ = ("_keys", "_n", "_threshold", "_vals", "k")

    def __init__(self, k: int) -> None:
        self.k = k
        self._keys: list[UIntArray] = []
        self._vals: list[FloatArray] = []
        self._n = 0
        self._threshold: int | None = None

    def offer(self, keys: UIntArray, vals: FloatArray) -> None:
        if self._threshold is not None:
            keep = keys < _U64(self._threshold)
            keys, vals = keys[keep], vals[keep]
        if len(keys):
            self._keys.append(keys)
            self._vals.append(vals)
            self._n += len(keys)
            if self._n > 2 * self.k:
                self._compact()

    def _compact(self) -> None:
        keys = np.concatenate(self._keys) if self._keys else np.empty(0, dtype=_U64)
        vals = np.concatenate(self._vals) if self._vals else np.empty(0)
        if len(keys) > self.k:
            idx = np.argpartition(keys, self.k - 1)[: self.k]
            keys, vals = keys[idx], vals[idx]
            self._threshold = int(keys.max())
        self._keys, self._vals, self._n = [keys], [vals], len(keys)

    def values(self) -> FloatArray:
        self._compact()
        order = np.argsort(self._keys[0], kind="stable")  # canonical order: by key
        return self._vals[0][order]


_Prepared = tuple[FloatArray, list[str]]


def _prepare(col: Sequence[Any], numeric: tuple[FloatArray, BoolArray | None] | None = None) -> _Prepared:
    """A column as its numbers (NaN elsewhere) and the labels of its other present values.

    ``numeric`` is :func:`numeric_column` of ``col`` when the caller has it already.
    Raises ``ValueError`` for a value outside the event contract, before anything is folded.
    """
    x, other = numeric_column(col) if numeric is None else numeric
    if other is None:
        return x, []
    labels = [category_label(col[i]) for i in np.flatnonzero(other).tolist()]
    return x, [lab for lab in labels if lab is not None]  # None: an empty map, missing


class _ColumnAcc:
    """What the builder keeps of one column (a feature or the prediction)."""

    __slots__ = (
        "label_capacity", "labels", "m2", "max", "mean", "min", "missing", "n_lab", "n_num", "reservoir"
    )

    def __init__(self, missing: int, reservoir: int, label_capacity: int) -> None:
        self.missing = missing
        self.n_num = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.reservoir = _BottomK(reservoir)
        self.labels: Counter[str] = Counter()
        self.n_lab = 0
        self.label_capacity = label_capacity

    def add(self, col: _Prepared, keys: UIntArray) -> None:
        x, labels = col
        finite = np.isfinite(x)
        n_num = int(np.count_nonzero(finite))
        if labels:
            self._add_labels(labels)
        self.missing += len(x) - n_num - len(labels)
        if n_num == 0:
            return
        xs = x[finite] if n_num < len(x) else x
        # Chan-Golub-LeVeque pairwise merge of (count, mean, M2): no cancellation on large means
        b_mean = float(xs.mean())
        b_m2 = float(np.dot(xs - b_mean, xs - b_mean))
        n = self.n_num + n_num
        delta = b_mean - self.mean
        self.mean += delta * n_num / n
        self.m2 += b_m2 + delta * delta * self.n_num * n_num / n
        self.n_num = n
        self.min = min(self.min, float(xs.min()))
        self.max = max(self.max, float(xs.max()))
        self.reservoir.offer(keys[finite] if n_num < len(x) else keys, xs)

    def _add_labels(self, new: list[str]) -> None:
        labels = self.labels
        labels.update(new)
        self.n_lab += len(new)
        if len(labels) > self.label_capacity:
            # Misra-Gries pruning (as in streams.core.features): counts stay exact while the
            # feature has at most label_capacity distinct categories; beyond, each count is
            # under-estimated by at most n_lab / (label_capacity + 1) and the lost mass is "other".
            cut = sorted(labels.values(), reverse=True)[self.label_capacity]
            self.labels = Counter({k: c - cut for k, c in labels.items() if c > cut})

    def numeric_profile(self, n_events: int, n_bins: int) -> NumericProfile:
        missing_rate = self.missing / n_events if n_events else 0.0
        if self.n_num == 0:
            return NumericProfile((), (1.0,), 0, None, None, missing_rate, None, None)
        vals = self.reservoir.values()
        qs = np.quantile(vals, np.arange(1, n_bins) / n_bins)
        edges = np.unique(qs)
        counts = np.bincount(np.searchsorted(edges, vals, side="left"), minlength=len(edges) + 1)
        return NumericProfile(
            edges=tuple(float(v) for v in edges),
            proportions=floor_proportions(counts),
            count=self.n_num,
            mean=self.mean,
            std=math.sqrt(max(self.m2, 0.0) / self.n_num),
            missing_rate=missing_rate,
            min=self.min,
            max=self.max,
        )

    def categorical_profile(self, n_events: int, top_k: int) -> CategoricalProfile:
        counts: dict[str, float] = dict(self.labels)
        if self.n_num:
            # numbers in a column that also holds strings: labelled from the reservoir,
            # scaled to their exact total (exact while they fit in the reservoir)
            vals = self.reservoir.values()
            scale = self.n_num / len(vals)
            for lab, c in Counter(category_label(v) or "" for v in vals.tolist()).items():
                counts[lab] = counts.get(lab, 0.0) + c * scale
        total = self.n_num + self.n_lab
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        top = [c for _, c in ranked]
        props = floor_proportions([*top, max(total - math.fsum(top), 0.0)])
        return CategoricalProfile(
            categories={lab: p for (lab, _), p in zip(ranked, props, strict=False)},
            other=props[-1],
            count=round(total),
            missing_rate=self.missing / n_events if n_events else 0.0,
        )

    def profile(self, n_events: int, n_bins: int, top_k: int) -> FeatureProfile:
        if self.n_lab:
            return self.categorical_profile(n_events, top_k)
        return self.numeric_profile(n_events, n_bins)


def smallest_keys(keys: UIntArray, k: int) -> list[int]:
    """Positions of the ``k`` smallest ``keys`` (ties: first), in position order.

    A bottom-k row sample keeps the rows of the ``k`` smallest keys over
    everything added, so a row outside the ``k`` smallest of its own batch can
    never be kept: converting and holding it is wasted work.

    >>> smallest_keys(np.array([9, 3, 7, 3, 1], dtype=np.uint64), 3)
    [1, 3, 4]
    """
    if len(keys) <= k:
        return list(range(len(keys)))
    return sorted(np.argsort(keys, kind="stable")[:k].tolist())


def _sample_value(v: Any) -> float | str | None:
    if v is None:
        return None
    if _is_number(v):
        x = float(v)
        return x if math.isfinite(x) else None
    return category_label(v)


def _sample_column(values: list[Any]) -> list[float | str | None]:
    """:func:`_sample_value` of each value; a column of floats (and None) without a call per value."""
    if set(map(type, values)) <= _FLOAT_NONE:
        # x - x is 0.0 for finite floats only (NaN and infinities give NaN)
        return [v if v is not None and v - v == 0.0 else None for v in values]
    return list(map(_sample_value, values))


_FLOAT_NONE = frozenset({float, type(None)})


class ProfileBuilder:
    """Build a :class:`ReferenceProfile` as a fold over column batches.

    Parameters
    ----------
    n_bins
        Number of quantile bins per numeric feature (fewer when quantiles tie). 20 bins of
        5 % each are the usual PSI binning, and a 500-event window still expects 25 events per bin.
    top_k
        Number of categories kept per categorical feature; the rest is ``other``.
    sample_rows
        Number of reference rows kept for the multivariate domain classifier.
    reservoir
        Values kept per numeric feature for the quantile edges (and the bin proportions);
        both are exact while a feature has at most this many values.
    seed
        Seed of the row keys that choose the reservoir and the row sample.

    A column is numeric when all its present values are numbers (booleans are
    not); otherwise it is categorical and its numbers are labelled like
    ``category_label``. A feature absent from a batch is missing for the rows of
    that batch. NaN and infinities count as missing. Mean and standard
    deviation are exact (pairwise merge of Chan, Golub and LeVeque, 1979).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=2000).tolist()
    >>> one = ProfileBuilder(n_bins=10, seed=3)
    >>> one.add({"x": x})
    >>> split = ProfileBuilder(n_bins=10, seed=3)
    >>> for lo in range(0, 2000, 300):
    ...     split.add({"x": x[lo:lo + 300]})
    >>> a = one.build("m", None, created_ms=0, source="doc")
    >>> b = split.build("m", None, created_ms=0, source="doc")
    >>> a.features["x"].edges == b.features["x"].edges, a.sample == b.sample
    (True, True)
    >>> abs(a.features["x"].mean - b.features["x"].mean) < 1e-12  # float rounding only
    True
    >>> len(a.features["x"].edges), round(a.features["x"].proportions[0], 3)
    (9, 0.1)
    """

    def __init__(
        self,
        n_bins: int = 20,
        top_k: int = 50,
        sample_rows: int = 500,
        reservoir: int = 100_000,
        seed: int = 0,
    ) -> None:
        for name, v, lo in (("n_bins", n_bins, 2), ("top_k", top_k, 1), ("sample_rows", sample_rows, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: must be an int >= {lo}, got {v!r}")
        if isinstance(reservoir, bool) or not isinstance(reservoir, int) or reservoir < n_bins:
            raise ValueError(f"reservoir: must be an int >= n_bins ({n_bins}), got {reservoir!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an int, got {seed!r}")
        self.n_bins = n_bins
        self.top_k = top_k
        self.sample_rows = sample_rows
        self.reservoir = reservoir
        self.seed = seed
        self._n = 0
        self._cols: dict[str, _ColumnAcc] = {}
        self._pred: _ColumnAcc | None = None
        self._pred_rows = 0
        # row sample: keys and parallel value columns, cut back to the smallest keys
        self._s_keys: list[int] = []
        self._s_cols: dict[str, list[float | str | None]] = {}
        self._s_threshold: int | None = None

    @property
    def n_events(self) -> int:
        """Rows added so far."""
        return self._n

    def _acc(self, missing: int) -> _ColumnAcc:
        return _ColumnAcc(missing, self.reservoir, max(_LABEL_CAPACITY_MIN, 20 * self.top_k))

    def add(self, features: Mapping[str, Sequence[Any]], predictions: Sequence[Any] | None = None) -> None:
        """Fold one batch: ``features`` maps names to equal-length columns, ``predictions`` is parallel."""
        n = batch_len(features, predictions)
        if n == 0:
            return
        # check and convert everything first: a bad batch is refused whole, never half folded
        memo = features if isinstance(features, FeatureColumns) else None
        prepared: dict[str, _Prepared] = {}
        for name, col in features.items():
            if not isinstance(name, str) or not name or name == PREDICTION:
                raise ValueError(f"features: invalid feature name {name!r} (non-empty, not {PREDICTION!r})")
            try:
                if memo is not None and not memo.numbers_only(name) and memo.is_text(name):  # labels
                    prepared[name] = (np.full(len(col), np.nan), [v for v in col if v is not None])
                else:
                    prepared[name] = _prepare(col, memo.numeric(name) if memo is not None else None)
            except ValueError as exc:
                raise ValueError(f"features[{name!r}]: {exc}") from None
        pred: _Prepared | None = None
        if predictions is not None:
            col = [(top_class(p) if p else None) if isinstance(p, Mapping) else p for p in predictions]
            try:
                pred = _prepare(col)
            except ValueError as exc:
                raise ValueError(f"predictions: {exc}") from None
        keys = row_keys(self.seed, self._n, n)
        for name, prep in prepared.items():
            acc = self._cols.get(name)
            if acc is None:
                acc = self._cols[name] = self._acc(self._n)
            acc.add(prep, keys)
        for name, acc in self._cols.items():
            if name not in features:
                acc.missing += n
        if pred is not None:
            if self._pred is None:
                self._pred = self._acc(self._n)
            self._pred.add(pred, keys)
        elif self._pred is not None:
            self._pred.missing += n
        self._sample(features, keys)
        self._n += n

    def _sample(self, features: Mapping[str, Sequence[Any]], keys: UIntArray) -> None:
        if self.sample_rows == 0:
            return
        if self._s_threshold is None:
            cand: list[int] = smallest_keys(keys, self.sample_rows)
        else:
            cand = np.flatnonzero(keys < _U64(self._s_threshold)).tolist()
        if not cand:
            return
        held = len(self._s_keys)
        self._s_keys.extend(keys[cand].tolist())
        cols = self._s_cols
        for name, col in features.items():
            dst = cols.get(name)
            if dst is None:
                dst = cols[name] = [None] * held
            dst.extend(_sample_column([col[i] for i in cand]))
        if len(cols) > len(features):
            for name, dst in cols.items():
                if name not in features:
                    dst.extend([None] * len(cand))
        if len(self._s_keys) > 2 * self.sample_rows:
            self._cut_sample()

    def _cut_sample(self) -> None:
        order = sorted(range(len(self._s_keys)), key=self._s_keys.__getitem__)[: self.sample_rows]
        self._s_keys = [self._s_keys[i] for i in order]
        self._s_cols = {name: [col[i] for i in order] for name, col in self._s_cols.items()}
        if order and len(order) == self.sample_rows:
            self._s_threshold = self._s_keys[-1]

    def build(self, model: str, model_version: str | None, created_ms: int, source: str) -> ReferenceProfile:
        """The profile of everything added so far (the builder can keep folding afterwards)."""
        if self._n == 0:
            raise ValueError("build: no events were added")
        features = {
            name: self._cols[name].profile(self._n, self.n_bins, self.top_k) for name in sorted(self._cols)
        }
        prediction = None if self._pred is None else self._pred.profile(self._n, self.n_bins, self.top_k)
        self._cut_sample()
        sample: dict[str, list[float | str | None]] = {}
        for name, fp in features.items():
            raw = self._s_cols.get(name) or [None] * len(self._s_keys)
            if isinstance(fp, CategoricalProfile):
                sample[name] = [v if v is None or isinstance(v, str) else category_label(v) for v in raw]
            else:
                sample[name] = [v if isinstance(v, float) else None for v in raw]
        return ReferenceProfile(
            model=model,
            model_version=model_version,
            created_ms=created_ms,
            source=source,
            n_events=self._n,
            features=features,
            prediction=prediction,
            sample=sample,
        )


def batch_len(features: Mapping[str, Sequence[Any]], predictions: Sequence[Any] | None) -> int:
    """Rows of a column batch; ``ValueError`` naming the first column whose length differs.

    >>> batch_len({"a": [1, 2], "b": ["x", "y"]}, None), batch_len({}, [0.1])
    (2, 1)
    >>> batch_len({"a": [1, 2], "b": ["x"]}, None)
    Traceback (most recent call last):
    ...
    ValueError: features['b']: 1 values, features['a'] has 2
    """
    n: int | None = None
    first = ""
    for name, col in features.items():
        if n is None:
            n, first = len(col), name
        elif len(col) != n:
            raise ValueError(f"features[{name!r}]: {len(col)} values, features[{first!r}] has {n}")
    if predictions is not None:
        if n is None:
            n = len(predictions)
        elif len(predictions) != n:
            raise ValueError(f"predictions: {len(predictions)} values, features have {n}")
    return n or 0
