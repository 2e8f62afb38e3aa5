"""Tests of streams.core.labels against independent reference implementations.

scikit-learn is not a dependency, so the expected values come from
straightforward loops over a confusion matrix written here (``ref_*``) and
from small tables checked by hand.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from typing import Any

import numpy as np
import pytest

from streams.core.labels import (
    LOG_LOSS_EPS,
    OTHER,
    ClassificationMetrics,
    RegressionMetrics,
    class_key,
    class_rank,
)

REL = 1e-12


# -- helpers -------------------------------------------------------------------


def assert_close(actual: Any, expected: Any, path: str = "") -> None:
    """Recursive equality with floats compared at rel 1e-12 (dict keys must match exactly)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert set(actual) == set(expected), f"{path}: {sorted(actual)} != {sorted(expected)}"
        for k in expected:
            assert_close(actual[k], expected[k], f"{path}/{k}")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert actual == pytest.approx(expected, rel=REL, abs=1e-15), path
    else:
        assert actual == expected, path


def ref_classification(
    y_true: list[str], y_pred: list[str], weights: list[float] | None = None, positive: str | None = None
) -> dict[str, Any]:
    """Plain-loop reference of the sklearn definitions (zero_division=0)."""
    w = [1.0] * len(y_true) if weights is None else [float(x) for x in weights]
    rows = [(t, p, x) for t, p, x in zip(y_true, y_pred, w, strict=True) if x > 0]
    labels = sorted({t for t, _, _ in rows} | {p for _, p, _ in rows})
    cm = {(a, b): 0.0 for a in labels for b in labels}
    for t, p, x in rows:
        cm[(t, p)] += x
    n = sum(x for _, _, x in rows)
    per_class = {}
    for c in labels:
        tp = cm[(c, c)]
        predicted = sum(cm[(a, c)] for a in labels)
        actual = sum(cm[(c, b)] for b in labels)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    correct = sum(cm[(c, c)] for c in labels)
    macro = {m: sum(per_class[c][m] for c in labels) / len(labels) for m in ("precision", "recall", "f1")}
    # micro: pool tp/fp/fn over all classes.
    tp_all = correct
    fp_all = sum(cm[(a, b)] for a in labels for b in labels if a != b)
    fn_all = fp_all
    micro_p = tp_all / (tp_all + fp_all)
    micro_r = tp_all / (tp_all + fn_all)
    micro_f1 = 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0
    micro = {"precision": micro_p, "recall": micro_r, "f1": micro_f1}
    binary = None
    if positive is None:
        if set(labels) <= {"0", "1"}:
            positive = "1"
        elif set(labels) <= {"false", "true"}:
            positive = "true"
    if positive is not None:
        if positive in per_class:
            pc = per_class[positive]
            binary = {
                "positive": positive,
                "precision": pc["precision"],
                "recall": pc["recall"],
                "f1": pc["f1"],
            }
        else:
            binary = {"positive": positive, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    confusion: dict[str, dict[str, float]] = {}
    for (a, b), x in cm.items():
        if x > 0:
            confusion.setdefault(a, {})[b] = x
    return {
        "n": n,
        "accuracy": correct / n,
        "confusion": confusion,
        "per_class": per_class,
        "macro": macro,
        "micro": micro,
        "binary": binary,
    }


def ref_log_loss(p_true: list[float], weights: list[float] | None = None) -> tuple[float | None, float]:
    w = [1.0] * len(p_true) if weights is None else weights
    total = 0.0
    count = 0.0
    for p, x in zip(p_true, w, strict=True):
        if math.isnan(p):
            continue
        p = min(max(p, 1e-15), 1 - 1e-15)
        total += -math.log(p) * x
        count += x
    return (total / count if count else None), count


def without_log_loss(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k not in ("log_loss", "log_loss_n")}


def random_rows(
    rng: random.Random, n: int, classes: list[str]
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    y_true = [rng.choice(classes) for _ in range(n)]
    # Mostly right, so that accuracy is not trivial.
    y_pred = [t if rng.random() < 0.6 else rng.choice(classes) for t in y_true]
    p = np.array([rng.random() if rng.random() < 0.7 else np.nan for _ in range(n)])
    w = np.array([rng.choice([0.0, 0.5, 1.0, 2.0, 3.0]) for _ in range(n)])
    return y_true, y_pred, p, w


# -- class_key -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (np.bool_(True), "true"),
        (0, "0"),
        (1, "1"),
        (-3, "-3"),
        (10**20, "100000000000000000000"),
        (np.int64(7), "7"),
        (1.0, "1"),
        (0.0, "0"),
        (-0.0, "0"),
        (-2.0, "-2"),
        (np.float32(2.0), "2"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (1e-20, "1e-20"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        ("cat", "cat"),
        ("1.0", "1.0"),
        ("", ""),
        (np.str_("dog"), "dog"),
    ],
)
def test_class_key(value: object, expected: str) -> None:
    key = class_key(value)
    assert key == expected
    assert type(key) is str


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, b"x", (1,), 1 + 2j])
def test_class_key_rejects_non_labels(value: object) -> None:
    with pytest.raises(TypeError):
        class_key(value)


def test_int_and_integral_float_are_one_class() -> None:
    m = ClassificationMetrics()
    m.add([class_key(1), class_key(0.0)], [class_key(1.0), class_key(0)])
    assert m.result()["accuracy"] == 1.0


# -- binary, hand-checked ------------------------------------------------------

# 10 rows, positive class 1:
#   row     0 1 2 3 4 5 6 7 8 9
#   true    1 1 1 1 0 0 0 0 0 1
#   pred    1 1 0 1 0 1 0 0 1 1
# TP = rows 0,1,3,9 = 4   FN = row 2 = 1   FP = rows 5,8 = 2   TN = rows 4,6,7 = 3
# class 1: precision 4/6 = 2/3, recall 4/5, F1 = 2*(2/3)(4/5)/(2/3+4/5) = 8/11
# class 0: tp 3, predicted 3+1 = 4, actual 5 -> precision 3/4, recall 3/5, F1 = 2*(9/20)/(27/20) = 2/3
# accuracy 7/10; macro P = (2/3+3/4)/2 = 17/24, R = (4/5+3/5)/2 = 7/10, F1 = (8/11+2/3)/2 = 23/33
BIN_TRUE = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
BIN_PRED = [1, 1, 0, 1, 0, 1, 0, 0, 1, 1]
POS_PRF = (2 / 3, 4 / 5, 8 / 11)
NEG_PRF = (3 / 4, 3 / 5, 2 / 3)


@pytest.mark.parametrize(
    ("encode", "positive_label", "positive", "prf"),
    [
        pytest.param(int, None, "1", POS_PRF, id="ints"),
        pytest.param(float, None, "1", POS_PRF, id="floats"),
        pytest.param(bool, None, "true", POS_PRF, id="bools"),
        pytest.param(lambda v: "yes" if v else "no", "yes", "yes", POS_PRF, id="strings-explicit"),
        pytest.param(int, "0", "0", NEG_PRF, id="ints-positive-0"),
        pytest.param(bool, "false", "false", NEG_PRF, id="bools-positive-false"),
    ],
)
def test_binary_hand_checked(
    encode: Any, positive_label: str | None, positive: str, prf: tuple[float, float, float]
) -> None:
    m = ClassificationMetrics(positive_label=positive_label)
    m.add([class_key(encode(v)) for v in BIN_TRUE], [class_key(encode(v)) for v in BIN_PRED])
    r = m.result()
    assert r["n"] == 10.0
    assert r["accuracy"] == pytest.approx(0.7, rel=REL)
    assert_close(r["binary"], {"positive": positive, "precision": prf[0], "recall": prf[1], "f1": prf[2]})
    assert_close(r["macro"], {"precision": 17 / 24, "recall": 7 / 10, "f1": 23 / 33})
    assert_close(r["micro"], {"precision": 0.7, "recall": 0.7, "f1": 0.7})
    pos = class_key(encode(1))
    neg = class_key(encode(0))
    assert r["confusion"] == {pos: {pos: 4.0, neg: 1.0}, neg: {pos: 2.0, neg: 3.0}}
    assert r["per_class"][pos]["support"] == 5.0
    assert r["per_class"][neg]["support"] == 5.0


@pytest.mark.parametrize(
    ("y_true", "y_pred", "positive_label", "expected_positive"),
    [
        (["1", "1"], ["1", "1"], None, "1"),  # only "1" observed: still binary
        (["0", "0"], ["0", "0"], None, "1"),  # positive absent: all zero, like sklearn
        (["true"], ["false"], None, "true"),
        (["0", "1"], ["1", "2"], None, None),  # multiclass
        (["0", "true"], ["0", "true"], None, None),  # mixed encodings
        (["a", "b"], ["a", "b"], None, None),
        (["a", "b", "c"], ["a", "c", "c"], "c", "c"),  # one-vs-rest on request
        (["a", "b"], ["a", "b"], "z", "z"),  # requested positive never seen
    ],
)
def test_binary_positive_selection(
    y_true: list[str], y_pred: list[str], positive_label: str | None, expected_positive: str | None
) -> None:
    m = ClassificationMetrics(positive_label=positive_label)
    m.add(y_true, y_pred)
    r = m.result()
    expected = ref_classification(y_true, y_pred, positive=positive_label)
    assert_close(without_log_loss(r), expected)
    if expected_positive is None:
        assert r["binary"] is None
    else:
        assert r["binary"]["positive"] == expected_positive


# -- multiclass ----------------------------------------------------------------

# 3 true classes plus "d", which is predicted once but never true.
#   true a a a b b c c c
#   pred a a b b c c a d
# a: tp 2, predicted 3 (rows 0,1,6), actual 3 -> P 2/3 R 2/3 F1 2/3
# b: tp 1, predicted 2 (rows 2,3),   actual 2 -> P 1/2 R 1/2 F1 1/2
# c: tp 1, predicted 2 (rows 4,5),   actual 3 -> P 1/2 R 1/3 F1 2*(1/6)/(5/6) = 2/5
# d: tp 0, predicted 1, actual 0             -> P 0   R 0 (zero_division) F1 0, support 0
# macro over {a,b,c,d}: P (2/3+1/2+1/2+0)/4 = 5/12, R (2/3+1/2+1/3+0)/4 = 3/8, F1 (2/3+1/2+2/5)/4 = 47/120
# accuracy = micro = 4/8
MC_TRUE = list("aaabbccc")
MC_PRED = list("aabbccad")


def test_multiclass_hand_checked() -> None:
    m = ClassificationMetrics()
    m.add(MC_TRUE, MC_PRED)
    r = m.result()
    assert_close(
        r["per_class"],
        {
            "a": {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3.0},
            "b": {"precision": 1 / 2, "recall": 1 / 2, "f1": 1 / 2, "support": 2.0},
            "c": {"precision": 1 / 2, "recall": 1 / 3, "f1": 2 / 5, "support": 3.0},
            "d": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0.0},
        },
    )
    assert_close(r["macro"], {"precision": 5 / 12, "recall": 3 / 8, "f1": 47 / 120})
    assert_close(r["micro"], {"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert r["accuracy"] == 0.5
    assert r["binary"] is None
    assert_close(without_log_loss(r), ref_classification(MC_TRUE, MC_PRED))


@pytest.mark.parametrize(
    ("y_true", "y_pred"),
    [
        pytest.param(["a", "a", "b"], ["a", "c", "b"], id="predicted-never-true"),
        pytest.param(["a", "c", "b"], ["a", "a", "b"], id="true-never-predicted"),
        pytest.param(["a", "b"], ["b", "a"], id="all-wrong"),
        pytest.param(["x"], ["y"], id="single-row-wrong"),
        pytest.param(["x", "x"], ["x", "x"], id="single-class"),
    ],
)
def test_zero_division_cases_match_reference(y_true: list[str], y_pred: list[str]) -> None:
    m = ClassificationMetrics()
    m.add(y_true, y_pred)
    assert_close(without_log_loss(m.result()), ref_classification(y_true, y_pred))


def test_predicted_never_true_values() -> None:
    m = ClassificationMetrics()
    m.add(["a", "a", "b"], ["a", "c", "b"])
    r = m.result()
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0.0}
    # macro over {a, b, c}: P (1+1+0)/3, R (1/2+1+0)/3, F1 (2/3+1+0)/3
    assert_close(r["macro"], {"precision": 2 / 3, "recall": 1 / 2, "f1": 5 / 9})


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("weighted", [False, True])
def test_random_multiclass_matches_reference(seed: int, weighted: bool) -> None:
    rng = random.Random(seed)
    classes = [
        class_key(v) for v in rng.sample([0, 1, 2, 3, 4, "cat", "dog", 2.5, True], k=rng.randint(2, 6))
    ]
    y_true, y_pred, _, w = random_rows(rng, rng.randint(1, 200), classes)
    if weighted and not w.any():
        w[0] = 1.0
    m = ClassificationMetrics()
    m.add(y_true, y_pred, weights=w if weighted else None)
    expected = ref_classification(y_true, y_pred, weights=w.tolist() if weighted else None)
    assert_close(without_log_loss(m.result()), expected)


# -- log-loss ------------------------------------------------------------------


def test_log_loss_hand_checked_with_nan() -> None:
    p = [0.9, np.nan, 0.2, 1.0, 0.0, np.nan]
    m = ClassificationMetrics()
    m.add(["a"] * 6, ["a"] * 6, p_true=np.array(p))
    r = m.result()
    # Four known rows; 1.0 and 0.0 are clipped to 1 - 1e-15 and 1e-15.
    expected = (-math.log(0.9) - math.log(0.2) - math.log(1 - 1e-15) - math.log(1e-15)) / 4
    assert r["log_loss"] == pytest.approx(expected, rel=REL)
    assert r["log_loss_n"] == 4.0
    assert r["n"] == 6.0
    assert LOG_LOSS_EPS == 1e-15


@pytest.mark.parametrize("seed", range(5))
def test_log_loss_random_weighted(seed: int) -> None:
    rng = random.Random(seed)
    y_true, y_pred, p, w = random_rows(rng, 100, ["a", "b", "c"])
    m = ClassificationMetrics()
    m.add(y_true, y_pred, p_true=p, weights=w)
    expected, count = ref_log_loss(p.tolist(), w.tolist())
    r = m.result()
    assert r["log_loss"] == pytest.approx(expected, rel=REL)
    assert r["log_loss_n"] == pytest.approx(count, rel=REL)


def test_log_loss_none_without_known_probabilities() -> None:
    m = ClassificationMetrics()
    m.add(["a", "b"], ["a", "a"], p_true=np.array([np.nan, np.nan]))
    m.add(["a"], ["a"])
    r = m.result()
    assert r["n"] == 3.0
    assert r["log_loss"] is None
    assert r["log_loss_n"] == 0.0


# -- weights -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_classes", [64, 2])
def test_integer_weights_equal_repetition(seed: int, max_classes: int) -> None:
    rng = random.Random(seed)
    y_true, y_pred, p, _ = random_rows(rng, 60, ["a", "b", "c", "d", "e"])
    w = np.array([rng.randint(0, 3) for _ in y_true], dtype=np.float64)
    w[0] = 1.0
    weighted = ClassificationMetrics(max_classes=max_classes)
    weighted.add(y_true, y_pred, p_true=p, weights=w)
    reps = [int(x) for x in w]
    repeated = ClassificationMetrics(max_classes=max_classes)
    repeated.add(
        [t for t, k in zip(y_true, reps, strict=True) for _ in range(k)],
        [q for q, k in zip(y_pred, reps, strict=True) for _ in range(k)],
        p_true=np.repeat(p, reps),
    )
    assert_close(weighted.result(), repeated.result())
    assert weighted.to_json()["classes"] == repeated.to_json()["classes"]


def test_zero_weight_rows_are_absent() -> None:
    m = ClassificationMetrics()
    m.add(
        ["a", "zzz", "b"], ["a", "zzz", "a"], p_true=np.array([0.5, 0.01, 0.5]), weights=np.array([1, 0, 2])
    )
    r = m.result()
    assert "zzz" not in r["per_class"]
    assert r["n"] == 3.0
    assert r["log_loss_n"] == 3.0
    assert r["log_loss"] == pytest.approx(math.log(2), rel=REL)


# -- merge ---------------------------------------------------------------------


def split_points(rng: random.Random, n: int, parts: int) -> list[tuple[int, int]]:
    cuts = sorted(rng.randint(0, n) for _ in range(parts - 1))
    bounds = [0, *cuts, n]
    return list(itertools.pairwise(bounds))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize(("max_classes", "positive_label"), [(64, None), (3, None), (2, "e"), (1, "b")])
def test_classification_merge_equals_concatenation(
    seed: int, max_classes: int, positive_label: str | None
) -> None:
    rng = random.Random(seed)
    y_true, y_pred, p, w = random_rows(rng, rng.randint(0, 300), list("abcdefg"))
    use_w = seed % 2 == 0
    whole = ClassificationMetrics(max_classes, positive_label)
    whole.add(y_true, y_pred, p_true=p, weights=w if use_w else None)

    parts = []
    for lo, hi in split_points(rng, len(y_true), rng.randint(2, 6)):
        part = ClassificationMetrics(max_classes, positive_label)
        part.add(y_true[lo:hi], y_pred[lo:hi], p_true=p[lo:hi], weights=w[lo:hi] if use_w else None)
        parts.append(part)

    # Left fold.
    merged = ClassificationMetrics(max_classes, positive_label)
    for part in parts:
        merged.merge(part)
    # Random tree of merges (associativity).
    pool = [copy.deepcopy(x) for x in parts]
    while len(pool) > 1:
        i = rng.randrange(len(pool) - 1)
        pool[i].merge(pool.pop(i + 1))

    for candidate in (merged, pool[0]):
        assert_close(candidate.result(), whole.result())
        assert candidate.to_json()["classes"] == whole.to_json()["classes"]


def test_merge_with_itself_doubles() -> None:
    m = ClassificationMetrics(max_classes=2)
    m.add(list("abc"), list("bca"), p_true=np.array([0.5, np.nan, 0.25]))
    twice = ClassificationMetrics(max_classes=2)
    for _ in range(2):
        twice.add(list("abc"), list("bca"), p_true=np.array([0.5, np.nan, 0.25]))
    m.merge(m)
    assert_close(m.result(), twice.result())


def test_merge_rejects_mismatch() -> None:
    with pytest.raises(ValueError):
        ClassificationMetrics(max_classes=3).merge(ClassificationMetrics(max_classes=4))
    with pytest.raises(ValueError):
        ClassificationMetrics(positive_label="a").merge(ClassificationMetrics())
    with pytest.raises(TypeError):
        ClassificationMetrics().merge(RegressionMetrics())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RegressionMetrics().merge(ClassificationMetrics())  # type: ignore[arg-type]


# -- bounded classes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["b", "a", "c"], ["a", "b", "c"]),
        (["10", "9", "-1", "0"], ["-1", "0", "9", "10"]),  # integers numerically, not as strings
        (["x", "2.5", "3", "true"], ["3", "2.5", "true", "x"]),  # integers first, then strings
        (["01", "1", "+1"], ["1", "+1", "01"]),  # only canonical integers rank as numbers
        (["1" * 30, "5"], ["5", "1" * 30]),  # too long to rank numerically: a string
    ],
)
def test_class_rank(names: list[str], expected: list[str]) -> None:
    assert sorted(names, key=class_rank) == expected


def test_max_classes_folding_keeps_best_ranked() -> None:
    m = ClassificationMetrics(max_classes=2)
    m.add(["d", "c", "d"], ["c", "d", "e"])
    assert m.to_json()["classes"] == ["c", "d"]
    assert m.result()["confusion"] == {"c": {"d": 1.0}, "d": {"c": 1.0, OTHER: 1.0}}
    # A better-ranked class evicts "d"; d's counts move into the bucket.
    m.add(["a", "x"], ["a", "c"])
    r = m.result()
    assert m.to_json()["classes"] == ["a", "c"]
    assert r["confusion"] == {
        "a": {"a": 1.0},
        "c": {OTHER: 1.0},
        OTHER: {"c": 2.0, OTHER: 1.0},  # (d, c), (x, c), (d, e)
    }
    assert set(r["per_class"]) == {"a", "c", OTHER}
    assert r["n"] == 5.0
    # Folding loses identity: (d, e) counts as a hit of the bucket, as sklearn would after relabelling.
    assert r["accuracy"] == pytest.approx(2 / 5, rel=REL)


@pytest.mark.parametrize("seed", range(5))
def test_folding_is_independent_of_row_order(seed: int) -> None:
    rng = random.Random(seed)
    y_true, y_pred, p, w = random_rows(rng, 120, [str(i) for i in range(12)] + list("abcdef"))
    rows = list(zip(y_true, y_pred, p.tolist(), w.tolist(), strict=True))
    shuffled = rows[:]
    rng.shuffle(shuffled)
    results = []
    for data in (rows, shuffled):
        m = ClassificationMetrics(max_classes=5)
        for lo in range(0, len(data), 7):
            chunk = data[lo : lo + 7]
            m.add(
                [r[0] for r in chunk],
                [r[1] for r in chunk],
                p_true=np.array([r[2] for r in chunk]),
                weights=np.array([r[3] for r in chunk]),
            )
        assert m.to_json()["classes"] == ["0", "1", "2", "3", "4"]
        results.append(m.result())
    assert_close(results[1], results[0])


def test_positive_label_is_never_folded() -> None:
    m = ClassificationMetrics(max_classes=1, positive_label="z")
    m.add(["a", "b", "z", "z"], ["a", "z", "z", "c"])
    assert m.to_json()["classes"] == ["a", "z"]
    r = m.result()
    # z: tp 1, predicted 2, actual 2
    assert_close(r["binary"], {"positive": "z", "precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert r["confusion"][OTHER] == {"z": 1.0}


def test_state_is_bounded() -> None:
    m = ClassificationMetrics(max_classes=5)
    for i in range(50):
        m.add([f"t{i}", f"u{i}"], [f"p{i}", f"t{i}"])
    state = m.to_json()
    assert len(state["classes"]) == 5
    assert len(state["confusion"]) <= 6
    assert all(len(row) <= 6 for row in state["confusion"].values())
    assert m.result()["n"] == 100.0


# -- input validation ----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_classes": 0},
        {"max_classes": -1},
        {"max_classes": 1.5},
        {"max_classes": True},
        {"positive_label": 1},
        {"positive_label": OTHER},
    ],
)
def test_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClassificationMetrics(**kwargs)


@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((["a", "b"], ["a"]), ValueError),
        ((["a"], ["a"], np.array([0.5, 0.5])), ValueError),
        ((["a"], ["a"], np.array([1.5])), ValueError),
        ((["a"], ["a"], np.array([-0.1])), ValueError),
        ((["a"], ["a"], np.array([np.inf])), ValueError),
        ((["a"], ["a"], None, np.array([-1.0])), ValueError),
        ((["a"], ["a"], None, np.array([np.nan])), ValueError),
        ((["a"], ["a"], None, np.array([1.0, 1.0])), ValueError),
        (([1], ["a"]), TypeError),
        ((["a", None], ["a", "a"]), TypeError),
    ],
)
def test_bad_add_changes_nothing(args: tuple[Any, ...], exc: type[Exception]) -> None:
    m = ClassificationMetrics()
    m.add(["q"], ["q"])
    before = m.to_json()
    with pytest.raises(exc):
        m.add(*args)
    assert m.to_json() == before


@pytest.mark.parametrize(
    "args",
    [
        (np.zeros(3), np.zeros(2)),
        (np.zeros((2, 2)), np.zeros((2, 2))),
        (np.zeros(2), np.zeros(2), np.array([1.0, -1.0])),
        (np.zeros(2), np.zeros(2), np.array([1.0])),
    ],
)
def test_bad_regression_add(args: tuple[Any, ...]) -> None:
    m = RegressionMetrics()
    with pytest.raises(ValueError):
        m.add(*args)
    assert m.result()["n"] == 0.0


# -- regression ----------------------------------------------------------------


def test_regression_hand_checked() -> None:
    # errors (pred - true): +1, -2, +3, skipped, skipped
    m = RegressionMetrics()
    m.add(np.array([1.0, 2.0, 3.0, np.nan, 1.0]), np.array([2.0, 0.0, 6.0, 1.0, np.nan]))
    r = m.result()
    assert r == {
        "n": 3.0,
        "mae": 2.0,
        "mse": pytest.approx(14 / 3, rel=REL),
        "rmse": pytest.approx(math.sqrt(14 / 3), rel=REL),
        "bias": pytest.approx(2 / 3, rel=REL),
        "skipped": 2,
    }


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("weighted", [False, True])
def test_regression_matches_numpy(seed: int, weighted: bool) -> None:
    gen = np.random.default_rng(seed)
    n = 500
    t = gen.normal(10, 3, n)
    p = t + gen.normal(0.5, 2, n)
    t[gen.random(n) < 0.05] = np.nan
    p[gen.random(n) < 0.05] = np.nan
    t[3] = np.inf
    w = gen.integers(0, 4, n).astype(np.float64) if weighted else None
    m = RegressionMetrics()
    m.add(t, p, weights=w)
    ok = np.isfinite(t) & np.isfinite(p)
    e = (p - t)[ok]
    wk = None if w is None else w[ok]
    mse = float(np.average(e**2, weights=wk))
    assert_close(
        m.result(),
        {
            "n": float(ok.sum()) if w is None else float(wk.sum()),  # type: ignore[union-attr]
            "mae": float(np.average(np.abs(e), weights=wk)),
            "mse": mse,
            "rmse": math.sqrt(mse),
            "bias": float(np.average(e, weights=wk)),
            "skipped": int((~ok).sum()),
        },
    )


def test_regression_weights_equal_repetition() -> None:
    gen = np.random.default_rng(7)
    t, p = gen.normal(size=50), gen.normal(size=50)
    reps = gen.integers(0, 4, 50)
    a, b = RegressionMetrics(), RegressionMetrics()
    a.add(t, p, weights=reps.astype(np.float64))
    b.add(np.repeat(t, reps), np.repeat(p, reps))
    assert_close(a.result(), b.result())


def test_regression_overflowing_error_is_skipped() -> None:
    m = RegressionMetrics()
    m.add(np.array([-1e200, 0.0]), np.array([1e200, 1.0]))
    assert m.result()["skipped"] == 1
    assert m.result()["mse"] == 1.0
    json.dumps(m.to_json(), allow_nan=False)


@pytest.mark.parametrize("seed", range(10))
def test_regression_merge_equals_concatenation(seed: int) -> None:
    rng = random.Random(seed)
    gen = np.random.default_rng(seed)
    n = rng.randint(0, 400)
    t, p = gen.normal(size=n), gen.normal(size=n) * 5
    t[gen.random(n) < 0.1] = np.nan
    w = gen.random(n)
    whole = RegressionMetrics()
    whole.add(t, p, weights=w)
    merged = RegressionMetrics()
    for lo, hi in split_points(rng, n, rng.randint(2, 6)):
        part = RegressionMetrics()
        part.add(t[lo:hi], p[lo:hi], weights=w[lo:hi])
        merged.merge(part)
    assert_close(merged.result(), whole.result())


# -- empty ---------------------------------------------------------------------

EMPTY_CLASSIFICATION: dict[str, Any] = {
    "n": 0.0,
    "accuracy": None,
    "confusion": {},
    "per_class": {},
    "macro": None,
    "micro": None,
    "binary": None,
    "log_loss": None,
    "log_loss_n": 0.0,
}


@pytest.mark.parametrize(
    "feed",
    [
        pytest.param(lambda m: None, id="fresh"),
        pytest.param(lambda m: m.add([], [], p_true=np.array([]), weights=np.array([])), id="empty-batch"),
        pytest.param(lambda m: m.add(["a"], ["b"], weights=np.array([0.0])), id="zero-weight"),
        pytest.param(lambda m: m.merge(ClassificationMetrics(positive_label="1")), id="merged-empty"),
    ],
)
def test_empty_classification(feed: Any) -> None:
    m = ClassificationMetrics(positive_label="1")
    feed(m)
    assert m.result() == EMPTY_CLASSIFICATION


@pytest.mark.parametrize(
    ("t", "p", "skipped"),
    [
        (np.array([]), np.array([]), 0),
        (np.array([np.nan, 1.0]), np.array([1.0, np.nan]), 2),
    ],
)
def test_empty_regression(t: np.ndarray, p: np.ndarray, skipped: int) -> None:
    m = RegressionMetrics()
    m.add(t, p)
    assert m.result() == {"n": 0.0, "mae": None, "mse": None, "rmse": None, "bias": None, "skipped": skipped}


# -- persistence ---------------------------------------------------------------


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(state, allow_nan=False))
    return loaded


@pytest.mark.parametrize(("max_classes", "positive_label"), [(64, None), (2, None), (1, "c")])
def test_classification_json_round_trip(max_classes: int, positive_label: str | None) -> None:
    rng = random.Random(3)
    y_true, y_pred, p, w = random_rows(rng, 80, list("abcd"))
    m = ClassificationMetrics(max_classes, positive_label)
    m.add(y_true[:40], y_pred[:40], p_true=p[:40], weights=w[:40])
    restored = ClassificationMetrics.from_json(roundtrip(m.to_json()))
    assert restored.to_json() == m.to_json()
    assert restored.result() == m.result()
    # Continuing after a restore is the same as never having stopped.
    for x in (m, restored):
        x.add(y_true[40:], y_pred[40:], p_true=p[40:], weights=w[40:])
    assert restored.to_json() == m.to_json()
    assert restored.result() == m.result()


def test_regression_json_round_trip() -> None:
    m = RegressionMetrics()
    m.add(np.array([1.0, 2.0, np.nan]), np.array([1.5, 0.0, 3.0]), weights=np.array([1.0, 2.0, 1.0]))
    restored = RegressionMetrics.from_json(roundtrip(m.to_json()))
    assert restored.to_json() == m.to_json()
    assert restored.result() == m.result()
    assert RegressionMetrics.from_json(roundtrip(RegressionMetrics().to_json())).result()["n"] == 0.0


def _valid_classification_state() -> dict[str, Any]:
    m = ClassificationMetrics(max_classes=2, positive_label="a")
    m.add(["a", "b", "c", "d"], ["b", "a", "a", "d"], p_true=np.array([0.2, 0.3, np.nan, 0.9]))
    return roundtrip(m.to_json())


def _set(path: list[Any], value: Any) -> Any:
    def mutate(state: dict[str, Any]) -> Any:
        target = state
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        return state

    return mutate


def _delete(key: str) -> Any:
    def mutate(state: dict[str, Any]) -> Any:
        del state[key]
        return state

    return mutate


CLASSIFICATION_CORRUPTIONS = {
    "not-an-object": lambda s: [s],
    "no-version": _delete("version"),
    "future-version": _set(["version"], 2),
    "max-classes-zero": _set(["max_classes"], 0),
    "max-classes-string": _set(["max_classes"], "2"),
    "max-classes-bool": _set(["max_classes"], True),
    "positive-int": _set(["positive_label"], 1),
    "positive-other": _set(["positive_label"], OTHER),
    "classes-missing": _delete("classes"),
    "classes-not-list": _set(["classes"], "ab"),
    "classes-non-str": _set(["classes"], ["a", 1]),
    "classes-duplicate": _set(["classes"], ["a", "a"]),
    "classes-other": _set(["classes"], ["a", OTHER]),
    "classes-too-many": _set(["classes"], ["a", "b", "c", "d"]),
    "classes-unsorted": _set(["classes"], ["a", "c", "b"]),
    "other-but-not-full": lambda s: {**s, "classes": ["a"], "confusion": {"a": {OTHER: 1.0}}},
    "confusion-missing": _delete("confusion"),
    "confusion-list": _set(["confusion"], []),
    "confusion-unknown-row": _set(["confusion", "zz"], {"a": 1.0}),
    "confusion-row-not-object": _set(["confusion", "a"], 3),
    "confusion-unknown-cell": _set(["confusion", "a", "zz"], 1.0),
    "confusion-negative": _set(["confusion", "a", "b"], -1.0),
    "confusion-string": _set(["confusion", "a", "b"], "1"),
    "confusion-bool": _set(["confusion", "a", "b"], True),
    "confusion-null": _set(["confusion", "a", "b"], None),
    "log-loss-sum-missing": _delete("log_loss_sum"),
    "log-loss-sum-negative": _set(["log_loss_sum"], -0.5),
    "log-loss-n-inf": _set(["log_loss_n"], float("inf")),
    "log-loss-n-nan": _set(["log_loss_n"], float("nan")),
}


def test_valid_classification_state_loads() -> None:
    state = _valid_classification_state()
    # "a" is the positive label and takes no slot; "d" is folded.
    assert state["classes"] == ["a", "b", "c"]
    assert state["confusion"][OTHER] == {OTHER: 1.0}
    ClassificationMetrics.from_json(state)


@pytest.mark.parametrize("name", sorted(CLASSIFICATION_CORRUPTIONS))
def test_malformed_classification_state(name: str) -> None:
    state = CLASSIFICATION_CORRUPTIONS[name](_valid_classification_state())
    with pytest.raises(ValueError):
        ClassificationMetrics.from_json(state)


def _valid_regression_state() -> dict[str, Any]:
    m = RegressionMetrics()
    m.add(np.array([1.0, np.nan]), np.array([0.0, 1.0]))
    return roundtrip(m.to_json())


REGRESSION_CORRUPTIONS = {
    "not-an-object": lambda s: None,
    "future-version": _set(["version"], 2),
    "n-missing": _delete("n"),
    "n-negative": _set(["n"], -1.0),
    "n-string": _set(["n"], "1"),
    "sum-sq-inf": _set(["sum_sq"], float("inf")),
    "sum-abs-negative": _set(["sum_abs"], -1.0),
    "sum-err-nan": _set(["sum_err"], float("nan")),
    "skipped-negative": _set(["skipped"], -1),
    "skipped-float": _set(["skipped"], 1.5),
    "skipped-bool": _set(["skipped"], True),
    "sums-without-n": _set(["n"], 0.0),
}


def test_valid_regression_state_loads() -> None:
    state = _valid_regression_state()
    state["sum_err"] = -3.0  # bias may be negative
    RegressionMetrics.from_json(state)


@pytest.mark.parametrize("name", sorted(REGRESSION_CORRUPTIONS))
def test_malformed_regression_state(name: str) -> None:
    state = REGRESSION_CORRUPTIONS[name](_valid_regression_state())
    with pytest.raises(ValueError):
        RegressionMetrics.from_json(state)
