"""The benchmarks' data sets: shapes, values, a fixed split, errors."""

import numpy as np
import pytest

from benchmarks.datasets import load_binarized_digits

# --------------------------------------------------------------------------------------
# Data.
# --------------------------------------------------------------------------------------


def test_load_binarized_digits():
  datasets = pytest.importorskip("sklearn.datasets")
  train, test = load_binarized_digits()
  assert train.shape == (1438, 64) and test.shape == (359, 64)
  assert train.dtype == np.float32 and test.dtype == np.float32
  assert set(np.unique(train)) == {0.0, 1.0} and set(np.unique(test)) == {0.0, 1.0}
  again_train, again_test = load_binarized_digits()
  np.testing.assert_array_equal(train, again_train)
  np.testing.assert_array_equal(test, again_test)
  half_train, half_test = load_binarized_digits(test_fraction=0.5)
  assert half_train.shape[0] + half_test.shape[0] == 1797
  assert abs(half_test.shape[0] - 898.5) <= 1
  # The split is a partition of the data set: every image lands in exactly one part.
  data = (datasets.load_digits().data / 16.0 > 0.5).astype(np.float32)
  as_rows = lambda a: sorted(map(bytes, a.astype(np.uint8)))
  assert as_rows(np.concatenate([train, test])) == as_rows(data)


def test_load_binarized_digits_rejects_a_bad_test_fraction():
  for bad in (0.0, 1.0, -0.5):
    with pytest.raises(ValueError, match="test_fraction"):
      load_binarized_digits(test_fraction=bad)
  with pytest.raises(TypeError, match="test_fraction"):
    load_binarized_digits(test_fraction="0.2")
