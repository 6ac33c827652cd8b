"""Data sets of the benchmarks and notebooks, bundled with their dependencies (no download)."""

from __future__ import annotations

import numpy as np


def load_binarized_digits(test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
  r"""scikit-learn's bundled 8x8 handwritten digits, binarized, split into train and test.

  Each image's 64 pixel intensities (0 to 16) are scaled to :math:`[0, 1]` and
  thresholded: :math:`x = \mathbb 1[\text{pixel} / 16 > 0.5]`. The 1797 images are
  shuffled by a fixed permutation (``numpy.random.RandomState(0)``), so the split is the
  same on every call; ``round(test_fraction * 1797)`` images go to the test set. The
  data ship with scikit-learn, so nothing is downloaded.

  Args:
    test_fraction: the fraction of images in the test set, in :math:`(0, 1)`.

  Returns:
    ``(train, test)``: float32 numpy arrays of shape ``(n, 64)`` with values in
    ``{0., 1.}``.

  Raises:
    ValueError: ``test_fraction`` outside :math:`(0, 1)`.
    ImportError: scikit-learn is not installed.

  Examples:
    >>> train, test = load_binarized_digits()
    >>> train.shape, test.shape
    ((1438, 64), (359, 64))

  References:
    Alpaydin & Kaynak, *Optical Recognition of Handwritten Digits*, UCI Machine
    Learning Repository, 1998 (the data).
  """
  if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float, np.floating)):
    raise TypeError(f"test_fraction must be a number in (0, 1), got {type(test_fraction)}.")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
  from sklearn.datasets import load_digits

  images = load_digits().data
  data = (images / 16.0 > 0.5).astype(np.float32)
  order = np.random.RandomState(0).permutation(data.shape[0])
  num_test = min(max(int(round(test_fraction * data.shape[0])), 1), data.shape[0] - 1)
  return data[order[num_test:]], data[order[:num_test]]


__all__ = ["load_binarized_digits"]
