"""How closely a picture follows its control map: the mean IoU of layout regions and the
F1 of edges within a pixel tolerance (the figures ControlNet papers report)."""

from __future__ import annotations

import numpy as np


def mean_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the regions present in either (H, W) label map of |A ∩ B| / |A ∪ B|: a region
    that is drawn but absent counts as 0, as does one that is missing."""
    regions = np.union1d(np.unique(predicted), np.unique(truth))
    scores = []
    for region in regions:
        mine, theirs = predicted == region, truth == region
        scores.append(np.logical_and(mine, theirs).sum() / np.logical_or(mine, theirs).sum())
    return float(np.mean(scores))


def edge_f1(predicted: np.ndarray, truth: np.ndarray, tolerance: int = 2) -> float:
    """F1 of two (H, W) boolean edge maps, an edge pixel counting as matched when the other map
    has one within `tolerance` pixels (chessboard distance). Both empty: 1; one empty: 0."""
    import cv2

    if not predicted.any() and not truth.any():
        return 1.0
    if not predicted.any() or not truth.any():
        return 0.0
    reach = np.ones((2 * tolerance + 1,) * 2, np.uint8)
    near_truth = cv2.dilate(truth.astype(np.uint8), reach) > 0
    near_predicted = cv2.dilate(predicted.astype(np.uint8), reach) > 0
    precision = (predicted & near_truth).sum() / predicted.sum()
    recall = (truth & near_predicted).sum() / truth.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))
