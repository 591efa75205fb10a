"""Rating-prediction metrics (RMSE, MAE) and predictions from a model's scores of the rating values.

A generative recommender that answers a rating as text (``"1"`` ... ``"5"``) gives a log-likelihood
per possible value; :func:`ratings_from_log_likelihoods` turns those into a point prediction:

* ``expectation``: sum over values of value x softmax(log-likelihoods) — the mean of the model's
  distribution restricted to the valid values (minimises the expected squared error);
* ``argmax``: the most likely value (what decoding constrained to the values would answer; ties go to
  the lower value).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from jaxrec.errors import JaxrecError


def rating_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """``RMSE``, ``MAE`` and ``users`` of predicted vs true ratings (both [U])."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    if predicted.shape != truth.shape or predicted.ndim != 1:
        raise JaxrecError(f"rating metrics need two [U] arrays, got {predicted.shape} and {truth.shape}")
    if not np.isfinite(predicted).all():
        raise JaxrecError("rating metrics: a predicted rating is not finite")
    error = predicted - truth
    if not error.size:
        return {"RMSE": 0.0, "MAE": 0.0, "users": 0}
    return {"RMSE": float(np.sqrt(np.mean(error ** 2))), "MAE": float(np.mean(np.abs(error))),
            "users": int(error.size)}


def ratings_from_log_likelihoods(log_likelihoods: np.ndarray, values: np.ndarray,
                                 how: Literal["expectation", "argmax"] = "expectation") -> np.ndarray:
    """Point predictions [U] from log-likelihoods [U, R] of the ``values`` [R] (e.g. 1..5)."""
    scores = np.asarray(log_likelihoods, np.float64)
    values = np.asarray(values, np.float64)
    if scores.ndim != 2 or scores.shape[1] != values.shape[0]:
        raise JaxrecError(f"expected log-likelihoods [U, {values.shape[0]}], got {scores.shape}")
    if how == "argmax":
        return values[np.argmax(scores, axis=1)]
    if how != "expectation":
        raise JaxrecError(f"rating prediction must be 'expectation' or 'argmax', got {how!r}")
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (probs / probs.sum(axis=1, keepdims=True)) @ values
