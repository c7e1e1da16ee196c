"""Masked, weighted AUROC for many targets at once (Mann-Whitney with average ranks), and the bootstrap resamples.

Imports no ``labecg`` stage, so training (validation macro AUROC) and evaluation
(bootstrap) share one implementation.

The AUROC of a target is the probability that a random positive scores above a random
negative, ties counted one half. With a weight ``w_i`` per ECG (a bootstrap resample is
a vector of multiplicities) it is

    AUROC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i = s_j]) / (W_pos W_neg).

The observed (ECG, target) pairs of all targets are sorted once, by target then score;
for any weights the numerator is then one cumulative sum of negative weight along that
order, read at the start and end of each positive's tie group:

    2 * numerator_t = sum_{positive e of t} w_e (C[start_e] + C[end_e] - 2 C[first_t]),

with ``C[k]`` the weight of the negatives before position ``k``, ``start_e``/``end_e``
the first position of e's tie group and the position after it, ``first_t`` the first
position of target ``t``: no re-sorting per resample, O(n_observed) work. ``C`` is only
read at a few positions, so the negatives are summed in pieces between them (one sparse
matrix-vector product) and the cumulative sum runs over the pieces. With integer
weights every sum is an integer held exactly in float64, so the only rounding is the
final division.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import sparse

__all__ = ["auroc", "average_precision", "spearman", "SortedTargets", "sort_targets", "weighted_auroc"]


@dataclass(frozen=True)
class SortedTargets:
    """Observed (ECG, target) pairs of a label matrix in (target, score) order, split by class.

    Only positives contribute to the Mann-Whitney numerator, and each needs the negative
    weight of its target below its tie group and up to the group's end. The negatives, in
    (target, score) order, are cut at every position some positive (or a target's start)
    reads; the weight of each piece is one sparse matrix-vector product with the ECG
    weights, and its cumulative sum gives every position read.

    Attributes
    ----------
    n_ecgs, n_targets : int
        Shape of the label matrix the pairs come from.
    neg_pieces : scipy.sparse.csr_matrix of shape (n_pieces, n_ecgs)
        Row k selects the negatives (ECG rows) of piece k; ``neg_pieces @ w`` is the
        negative weight of every piece.
    pos_by_target : scipy.sparse.csr_matrix of shape (n_targets, n_ecgs)
        Row t selects the positives of target t.
    target_piece : ndarray of shape (n_targets + 1,), intp
        Cut (index into the cumulative piece weights) at each target's first negative;
        the last entry is the end.
    pos_ecg : ndarray of shape (n_positive,), intp
        ECG row of each positive, in (target, score) order.
    pos_below, pos_upto : ndarray of shape (n_positive,), intp
        Cut before the positive's tie group (same target, equal score) and at its end.
    pos_first : ndarray of shape (n_targets_with_positives,), intp
        Index of the first positive of each target that has one (for ``np.add.reduceat``).
    pos_targets : ndarray of shape (n_targets_with_positives,), intp
        Those targets.
    """

    n_ecgs: int
    n_targets: int
    neg_pieces: sparse.csr_matrix
    pos_by_target: sparse.csr_matrix
    target_piece: np.ndarray
    pos_ecg: np.ndarray
    pos_below: np.ndarray
    pos_upto: np.ndarray
    pos_first: np.ndarray
    pos_targets: np.ndarray


def as_float_pair(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores as float64 arrays of one shape; raises naming both shapes."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true and y_score must have the same shape; "
                         f"got y_true.shape={y_true.shape}, y_score.shape={y_score.shape}")
    return y_true, y_score


def _as_2d(y_true, y_score):
    y_true, y_score = as_float_pair(y_true, y_score)
    if y_true.ndim == 1:
        return y_true[:, None], y_score[:, None], True
    if y_true.ndim != 2:
        raise ValueError(f"expected arrays of shape (n_ecgs, n_targets); got y_true.shape={y_true.shape}")
    return y_true, y_score, False


def sort_targets(y_true, y_score) -> SortedTargets:
    """Sort the observed pairs of every target by score, once, for repeated AUROCs.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets)
        1.0 positive, 0.0 negative, NaN missing (the pair is left out).
    y_score : array-like of shape (n_ecgs, n_targets)
        Scores, higher meaning more likely positive; must be finite where ``y_true`` is
        observed (any value where it is missing).

    Returns
    -------
    SortedTargets
    """
    y_true, y_score, _ = _as_2d(y_true, y_score)
    n, T = y_true.shape
    observed = ~np.isnan(y_true)
    bad_label = observed & (y_true != 0.0) & (y_true != 1.0)
    if bad_label.any():
        i, t = np.argwhere(bad_label)[0]
        raise ValueError(f"y_true must hold 0.0, 1.0 or NaN; found {float(y_true[i, t])} "
                         f"at ECG row {i}, target column {t}")
    bad_score = observed & ~np.isfinite(y_score)
    if bad_score.any():
        i, t = np.argwhere(bad_score)[0]
        raise ValueError(f"y_score must be finite where y_true is observed; found {float(y_score[i, t])} "
                         f"at ECG row {i}, target column {t}")

    target, ecg = np.nonzero(observed.T)  # target-major
    score = y_score[ecg, target]
    order = np.lexsort((score, target))
    ecg, target, score = ecg[order], target[order], score[order]
    is_pos = y_true[ecg, target] == 1.0

    m = ecg.size
    new_group = np.ones(m, dtype=bool)
    new_group[1:] = (target[1:] != target[:-1]) | (score[1:] != score[:-1])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], m)
    group = np.cumsum(new_group) - 1
    neg_before = np.zeros(m + 1, dtype=np.intp)  # negatives before position k
    np.cumsum(~is_pos, out=neg_before[1:])
    target_start = np.searchsorted(target, np.arange(T + 1), side="left")  # (T + 1,)
    pos_group = group[is_pos]
    below = neg_before[starts[pos_group]]  # (n_positive,) negatives before the tie group
    upto = neg_before[ends[pos_group]]  # (n_positive,) negatives before its end
    neg_offset = neg_before[target_start]  # (T + 1,)
    n_neg = int(neg_before[-1])

    # Cut the negatives wherever a position is read; pieces are non-empty by construction.
    cuts = np.unique(np.concatenate([[0, n_neg], below, upto, neg_offset]))  # (n_pieces + 1,)
    neg_ecg = ecg[~is_pos]
    neg_pieces = sparse.csr_matrix((np.ones(n_neg), neg_ecg, cuts), shape=(cuts.size - 1, n))
    pos_ecg, pos_target = ecg[is_pos], target[is_pos]
    pos_offset = np.searchsorted(pos_target, np.arange(T + 1), side="left")  # (T + 1,)
    pos_by_target = sparse.csr_matrix((np.ones(pos_ecg.size), pos_ecg, pos_offset), shape=(T, n))
    has_pos = np.flatnonzero(np.diff(pos_offset) > 0)
    return SortedTargets(n_ecgs=n, n_targets=T, neg_pieces=neg_pieces, pos_by_target=pos_by_target,
                         target_piece=np.searchsorted(cuts, neg_offset),
                         pos_ecg=pos_ecg, pos_below=np.searchsorted(cuts, below),
                         pos_upto=np.searchsorted(cuts, upto),
                         pos_first=pos_offset[has_pos], pos_targets=has_pos)


def weighted_auroc(sorted_targets: SortedTargets, weights=None, *, return_counts: bool = False):
    """AUROC of every target with one weight per ECG (e.g. bootstrap multiplicities).

    Parameters
    ----------
    sorted_targets : SortedTargets
        From :func:`sort_targets`.
    weights : array-like of shape (n_ecgs,), optional
        Non-negative weight of each ECG; an ECG drawn k times in a resample has weight k.
        None means 1 for every ECG.
    return_counts : bool
        Also return the positive and negative weight of each target.

    Returns
    -------
    auroc : ndarray of shape (n_targets,), float64
        NaN where a target has no positive or no negative weight.
    pos, neg : ndarray of shape (n_targets,), float64
        Only with ``return_counts``: summed weight of positives and of negatives.
    """
    st = sorted_targets
    if weights is None:
        w = np.ones(st.n_ecgs)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (st.n_ecgs,):
            raise ValueError(f"weights must have shape ({st.n_ecgs},); got {w.shape}")
    c = np.zeros(st.neg_pieces.shape[0] + 1)
    np.cumsum(st.neg_pieces @ w, out=c[1:])  # c[k] = negative weight before cut k
    c_target = c[st.target_piece]  # (T + 1,)
    neg = np.diff(c_target)  # (T,)
    pos = st.pos_by_target @ w  # (T,)
    twice_num = np.zeros(st.n_targets)
    if st.pos_first.size:
        contrib = w[st.pos_ecg] * (c[st.pos_below] + c[st.pos_upto])  # (n_positive,)
        twice_num[st.pos_targets] = np.add.reduceat(contrib, st.pos_first)
    twice_num -= 2.0 * pos * c_target[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        result = twice_num / (2.0 * pos * neg)
    result[(pos == 0) | (neg == 0)] = np.nan
    if return_counts:
        return result, pos, neg
    return result


def auroc(y_true, y_score):
    """Area under the ROC curve of every target, missing labels left out.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets) or (n_ecgs,)
        1.0 positive, 0.0 negative, NaN missing.
    y_score : array-like of the same shape
        Scores (e.g. probabilities), higher meaning more likely positive; finite where
        ``y_true`` is observed.

    Returns
    -------
    ndarray of shape (n_targets,), float64, or float for 1-d input
        Mann-Whitney AUROC with ties counted one half (equal to
        ``sklearn.metrics.roc_auc_score`` on the observed pairs); NaN where a target has
        only one class (or no observed pair).

    Examples
    --------
    >>> auroc([[1, 1], [0, 1], [1, np.nan], [0, 1]], [[0.9, 0.2], [0.1, 0.2], [0.8, 0.5], [0.8, 0.7]])
    array([0.875,   nan])
    """
    y_true, y_score, one_d = _as_2d(y_true, y_score)
    result = weighted_auroc(sort_targets(y_true, y_score))
    return float(result[0]) if one_d else result


def average_precision(y_true, y_score):
    """Area under the precision-recall curve (average precision) of every target, missing labels left out.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct scores ``k`` from highest to
    lowest, ``P_k``, ``R_k`` the precision and recall of calling positive every ECG that
    scores at least ``k`` (ties enter together): the step-wise sum of
    ``sklearn.metrics.average_precision_score``, without interpolation. A model that
    ranks at random scores the prevalence on average, the baseline to read it against.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets) or (n_ecgs,)
        1.0 positive, 0.0 negative, NaN missing.
    y_score : array-like of the same shape
        Scores, higher meaning more likely positive; finite where ``y_true`` is observed.

    Returns
    -------
    ndarray of shape (n_targets,), float64, or float for 1-d input
        NaN where a target has no positive (or no observed pair).

    Examples
    --------
    >>> float(average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]))  # (1/2)(1) + (1/2)(2/3)
    0.8333333333333333
    """
    y_true, y_score, one_d = _as_2d(y_true, y_score)
    sort_targets(y_true, y_score)  # validates labels and scores, naming the first bad cell
    out = np.full(y_true.shape[1], np.nan)
    for t in range(y_true.shape[1]):
        m = ~np.isnan(y_true[:, t])
        y, s = y_true[m, t], y_score[m, t]
        n_pos = y.sum()
        if n_pos == 0:
            continue
        order = np.argsort(-s, kind="stable")
        y, s = y[order], s[order]
        last = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # last index of each tie group
        tp = np.cumsum(y)[last]
        precision = tp / (last + 1)
        recall = tp / n_pos
        out[t] = float(np.sum(np.diff(recall, prepend=0.0) * precision))
    return float(out[0]) if one_d else out


# The bootstrap resamples live here, beside the AUROC they weight, so that evaluation and
# explanations (which comes before it) draw the same ones.

#: Bootstrap resamples by default (``n_iterations`` of evaluate, explain and the book): the paper's 1000.
N_RESAMPLES = 1000


def spearman(y_true, y_score):
    """Spearman rank correlation of every target, missing values left out.

    Parameters
    ----------
    y_true : array-like of shape (n_ecgs, n_targets) or (n_ecgs,)
        Measured values, NaN missing.
    y_score : array-like of the same shape
        Predicted values; finite where ``y_true`` is observed.

    Returns
    -------
    ndarray of shape (n_targets,), float64, or float for 1-d input
        The Pearson correlation of the average ranks (ties share their mean rank) of the
        observed pairs, as ``scipy.stats.spearmanr``; NaN where a target has fewer than two
        observed pairs or either side is constant.

    Examples
    --------
    >>> spearman([[1.0, 2.0], [2.0, np.nan], [3.0, 1.0], [4.0, 0.0]], [[0.1, 5.0], [0.3, 1.0], [0.2, 4.0], [0.9, 9.0]])
    array([ 0.8, -0.5])
    """
    from scipy.stats import rankdata

    y_true, y_score, one_d = _as_2d(y_true, y_score)
    out = np.full(y_true.shape[1], np.nan)
    for t in range(y_true.shape[1]):
        seen = ~np.isnan(y_true[:, t])
        if seen.sum() < 2:
            continue
        a, b = rankdata(y_true[seen, t]), rankdata(y_score[seen, t])
        a, b = a - a.mean(), b - b.mean()
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        if denominator > 0:
            out[t] = (a * b).sum() / denominator
    return float(out[0]) if one_d else out


def resample_indices(n_ecgs: int, n_iterations: int, seed: int = 0) -> Iterator[np.ndarray]:
    """The ECG-level bootstrap resamples :func:`labecg.stats.bootstrap` uses, as row indices.

    Yields
    ------
    ndarray of shape (n_ecgs,), int64
        Rows drawn uniformly with replacement; one array per iteration.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_iterations):
        yield rng.integers(0, n_ecgs, size=n_ecgs)


def _group_codes(groups, n_ecgs: int) -> tuple[np.ndarray, int]:
    """Group id per ECG -> code 0 .. n_groups - 1 in the order of ``np.unique``."""
    groups = np.asarray(groups)
    if groups.shape != (n_ecgs,):
        raise ValueError(f"groups must have shape ({n_ecgs},), one id per ECG; got groups.shape={groups.shape}")
    if groups.dtype.kind == "f" and np.isnan(groups).any():
        raise ValueError(f"groups: {int(np.isnan(groups).sum())} ECGs have no group id (NaN)")
    uniq, codes = np.unique(groups, return_inverse=True)
    return codes.reshape(-1), uniq.size


def resample_weights(n_ecgs: int, n_iterations: int, seed: int = 0, groups=None) -> Iterator[np.ndarray]:
    """The bootstrap resamples of :func:`labecg.stats.bootstrap`, as a multiplicity per ECG.

    Without ``groups``: the multiplicities of :func:`resample_indices` (ECGs drawn with
    replacement). With ``groups``: the distinct ids, sorted (``np.unique``), are drawn
    ``n_groups`` times with replacement by ``np.random.default_rng(seed).integers(0,
    n_groups, size=n_groups)`` per iteration, and each ECG gets its group's count: a
    patient drawn twice brings all of its ECGs twice.

    Parameters
    ----------
    n_ecgs : int
    n_iterations : int
    seed : int
    groups : array-like of shape (n_ecgs,), optional
        Cluster id per ECG (the patient's ``subject_id``).

    Yields
    ------
    ndarray of shape (n_ecgs,), float64
        Multiplicity of each ECG in the resample.
    """
    if groups is None:
        for idx in resample_indices(n_ecgs, n_iterations, seed):
            yield np.bincount(idx, minlength=n_ecgs).astype(np.float64)
        return
    codes, n_groups = _group_codes(groups, n_ecgs)
    rng = np.random.default_rng(seed)
    for _ in range(n_iterations):
        count = np.bincount(rng.integers(0, n_groups, size=n_groups), minlength=n_groups)  # (G,)
        yield count[codes].astype(np.float64)
