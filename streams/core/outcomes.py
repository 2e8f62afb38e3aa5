"""Turn joined (prediction, label) pairs into classification or regression inputs.

Which metrics apply is a property of the model, set per model in the
configuration (``task``); ``auto`` infers it from the values: a numeric
prediction with a numeric label is regression, everything else (class names,
booleans, probability maps) classification. A model that outputs a score in
[0, 1] against 0/1 labels should say ``task: classification``: the score is
then thresholded (``threshold``) and also used as a probability for log-loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from streams.core.batches import top_class
from streams.core.join import Match
from streams.core.labels import class_key
from streams.core.pane import PaneState

Task = Literal["auto", "classification", "regression"]


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """How one model's predictions are scored against labels."""

    task: Task = "auto"
    positive_label: str | None = None
    threshold: float = 0.5


_OTHER = {"1": "0", "0": "1", "true": "false", "false": "true"}


def _is_number(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _classify(pred: Any, true_cls: str, threshold: float) -> tuple[str, float]:
    """(predicted class, probability given to the true class or NaN)."""
    if isinstance(pred, dict):
        if len(pred) == 1:  # the probability of one class only: binary, the other gets 1 - p
            ((name, prob),) = pred.items()
            cls = class_key(name)
            other = _OTHER.get(cls, f"not:{cls}")
            predicted = cls if prob >= threshold else other
            p_true = prob if true_cls == cls else 1.0 - prob if true_cls == other else math.nan
            return predicted, float(p_true)
        return class_key(top_class(pred)), float(pred[true_cls]) if true_cls in pred else math.nan
    if _is_number(pred):
        score = float(pred)
        cls = "1" if score >= threshold else "0"
        p_true = math.nan
        if 0.0 <= score <= 1.0 and true_cls in ("0", "1"):
            p_true = score if true_cls == "1" else 1.0 - score
        return cls, p_true
    return class_key(pred), math.nan


def _all_numbers(values: list[Any]) -> bool:
    return all(type(v) is float or type(v) is int for v in values)


def fold_matches(pane: PaneState, matches: list[Match], cfg: TaskConfig) -> None:
    """Fold joined pairs (all of one pane) into its label metrics and delay sketch.

    Examples
    --------
    >>> from streams.core.join import Match
    >>> pane = PaneState()
    >>> fold_matches(pane, [Match("v1", None, 0, 10.0, 13.0, 500), Match("v1", None, 0, 20.0, 20.0, 900)],
    ...              TaskConfig())
    >>> pane.labelled, pane.regression.result()["mae"]
    (2, 1.5)
    """
    rows = [m for m in matches if m.prediction is not None]
    if not rows:
        return
    delays = np.fromiter((m.label_time_ms - m.prediction_time_ms for m in rows), np.float64, len(rows))
    pane.labelled += len(rows)
    pane.label_delay.add(np.maximum(delays, 0.0))
    preds = [m.prediction for m in rows]
    labels = [m.label for m in rows]
    if cfg.task != "classification" and _all_numbers(preds) and _all_numbers(labels):
        # the common regression case, whole batch at once
        y, y_hat = np.asarray(labels, dtype=np.float64), np.asarray(preds, dtype=np.float64)
        pane.regression_metrics().add(y, y_hat)
        return
    y_true: list[str] = []
    y_pred: list[str] = []
    p_true: list[float] = []
    reg_true: list[float] = []
    reg_pred: list[float] = []
    classes: dict[tuple[type, Any], str] = {}  # class_key memo; the type keeps True and 1 apart
    for pred, label in zip(preds, labels, strict=True):
        regression = cfg.task == "regression" or (
            cfg.task == "auto" and _is_number(pred) and _is_number(label)
        )
        if regression:
            if _is_number(pred) and _is_number(label):
                reg_true.append(float(label))
                reg_pred.append(float(pred))
            continue
        true_cls = classes.get((type(label), label))
        if true_cls is None:
            true_cls = classes[(type(label), label)] = class_key(label)
        cls, p = _classify(pred, true_cls, cfg.threshold)
        y_true.append(true_cls)
        y_pred.append(cls)
        p_true.append(p)
    if y_true:
        pane.classification_metrics(cfg.positive_label).add(y_true, y_pred, np.asarray(p_true))
    if reg_true:
        pane.regression_metrics().add(np.asarray(reg_true), np.asarray(reg_pred))


def error_stream(matches: list[Match], cfg: TaskConfig) -> dict[str, tuple[list[int], list[float]]]:
    """Per model version, the error of each joined prediction: the stream concept-drift detectors watch.

    Classification gives 0/1 (1 = wrong), regression the absolute error; the
    task is decided as in :func:`fold_matches`. Returns prediction times and
    errors in match order.

    >>> from streams.core.join import Match
    >>> error_stream([Match("v1", None, 5, {"yes": 0.9}, "no", 9), Match("v1", None, 6, 2.0, 3.5, 9)],
    ...              TaskConfig())
    {'v1': ([5, 6], [1.0, 1.5])}
    """
    out: dict[str, tuple[list[int], list[float]]] = {}
    classes: dict[tuple[type, Any], str] = {}
    for m in matches:
        pred, label = m.prediction, m.label
        if pred is None:
            continue
        if cfg.task == "regression" or (cfg.task == "auto" and _is_number(pred) and _is_number(label)):
            if not (_is_number(pred) and _is_number(label)):
                continue
            err = abs(float(label) - float(pred))
        else:
            true_cls = classes.get((type(label), label))
            if true_cls is None:
                true_cls = classes[(type(label), label)] = class_key(label)
            err = 0.0 if _classify(pred, true_cls, cfg.threshold)[0] == true_cls else 1.0
        times, errs = out.setdefault(m.version, ([], []))
        times.append(m.prediction_time_ms)
        errs.append(err)
    return out
