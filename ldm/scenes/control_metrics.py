"""How closely a picture follows its control map: the mean IoU of layout regions and the
F1 of edges within a pixel tolerance (the figures ControlNet papers report)."""

from __future__ import annotations

import numpy as np


class RegionIoU:
    """Semantic segmentation's mean IoU over a set of images: each region's intersection and
    union summed over all of them, then |A ∩ B| / |A ∪ B| per region, averaged over the regions
    that occur (in a prediction or a truth). Every region weighs the same, so a small house
    counts as much as the sky; a region drawn where there is none scores 0."""

    def __init__(self, regions: int):
        self.intersection = np.zeros(regions, np.int64)
        self.union = np.zeros(regions, np.int64)

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """One (H, W) pair of label maps."""
        n = len(self.union)
        both = np.bincount(truth[predicted == truth].ravel(), minlength=n)
        self.intersection += both
        self.union += np.bincount(predicted.ravel(), minlength=n) + np.bincount(truth.ravel(), minlength=n) - both

    def per_region(self) -> dict[int, float]:
        return {int(r): float(self.intersection[r] / self.union[r]) for r in np.flatnonzero(self.union)}

    def mean(self) -> float:
        return float(np.mean(list(self.per_region().values())))


def mean_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """RegionIoU of one pair of (H, W) label maps."""
    score = RegionIoU(int(max(predicted.max(), truth.max())) + 1)
    score.add(predicted, truth)
    return score.mean()


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
