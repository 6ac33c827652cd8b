"""Candidate samplers: exact tables, frequencies by chi-square, unique sampling, exclusion.

Frequencies are checked with a chi-square test at a false-failure rate of
``helpers.FALSE_FAILURE``; proportions with binomial standard errors. Alias tables are
checked against the float64 distribution of the counts with the bound that
:func:`gradest.samplers.unigram_sampler` documents, built traced and concrete.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gradest._src.samplers import _bucket_and_coin, _log_uniform_ids
from gradest.samplers import (
  Candidates,
  LogUniformSampler,
  UniformSampler,
  UnigramSampler,
  accidental_hits,
  log_expected_count,
  sample_candidates,
  unigram_sampler,
)

from .helpers import FALSE_FAILURE, z_value

V = 50
ZIPF = 1000.0 / np.arange(1, V + 1) ** 1.1  # word-count-like weights


def samplers():
  return {
    "uniform": UniformSampler(V),
    "log_uniform": LogUniformSampler(V),
    "unigram": unigram_sampler(ZIPF, 0.75),
  }


def implied_distribution(sampler: UnigramSampler) -> np.ndarray:
  """The distribution an alias table samples.

  Bucket ``b`` (probability ``1/V``) gives class ``b`` with probability
  ``threshold[b] / 2**32`` and ``alias[b]`` otherwise.
  """
  keep = np.asarray(sampler.threshold, np.float64) / 2**32
  mass = keep + np.bincount(np.asarray(sampler.alias), 1.0 - keep, minlength=keep.shape[0])
  return mass / keep.shape[0]


def table_masses(sampler: UnigramSampler) -> np.ndarray:
  """Each class's mass in the table, in units of 2^-32 of a bucket, as exact integers."""
  threshold = np.asarray(sampler.threshold, np.int64)
  mass = threshold.copy()
  np.add.at(mass, np.asarray(sampler.alias), 2**32 - threshold)
  return mass


def target_distribution(counts, power: float) -> np.ndarray:
  """``counts ** power`` normalized, in float64 (zero counts stay at zero)."""
  counts = np.asarray(counts, np.float64)
  positive = counts > 0
  log_w = np.where(positive, power * np.log(np.where(positive, counts, 1.0)), -np.inf)
  w = np.exp(log_w - log_w.max())
  return w / w.sum()


def assert_table_exact(sampler: UnigramSampler, q: np.ndarray, rtol: float = 1e-5):
  """The table samples ``q``, within the bound ``unigram_sampler`` documents.

  The table's masses sum to exactly ``V * 2**32``; its distribution is within
  ``2**-21`` (relative) of the float32 ``q`` that ``log_probs`` holds, plus
  ``2**-29 / V + 2**-50``; float32 ``q`` is within about ``1e-6`` of the float64 one
  for the count ranges used here, so ``rtol = 1e-5``.
  """
  v = q.shape[0]
  assert table_masses(sampler).sum() == v * 2**32
  implied = implied_distribution(sampler)
  error = np.abs(implied - q) - (rtol * q + 2.0**-29 / v + 2.0**-50)
  worst = int(np.argmax(error))
  assert error[worst] <= 0, f"class {worst}: table {implied[worst]:.9g}, q {q[worst]:.9g}"
  probs = np.asarray(sampler.probs(), np.float64)
  np.testing.assert_allclose(probs, q, rtol=rtol, atol=1e-30)
  assert np.all(np.isneginf(np.asarray(sampler.log_probs)[q == 0]))


def max_relative_error(sampler: UnigramSampler, q: np.ndarray, floor: float = 1e-9) -> float:
  """The largest relative error of the table's distribution over classes with q >= floor."""
  keep = q >= floor
  return float(np.max(np.abs(implied_distribution(sampler)[keep] - q[keep]) / q[keep]))


def assert_chi_square(ids, probs, num_checks: int = 1):
  probs = np.asarray(probs, np.float64)
  counts = np.bincount(np.asarray(ids).ravel(), minlength=probs.shape[0])
  n = counts.sum()
  assert np.all(counts[probs == 0] == 0), "a class of probability 0 was drawn"
  keep = probs > 0
  expected = n * probs[keep]
  statistic = np.sum((counts[keep] - expected) ** 2 / expected)
  dof = keep.sum() - 1
  threshold = stats.chi2.ppf(1.0 - FALSE_FAILURE / num_checks, dof)
  assert statistic < threshold, f"chi-square {statistic:.1f} >= {threshold:.1f} ({dof} dof)"


@pytest.mark.parametrize("num_classes", [1, 2, 3, 7, 50, 1000])
def test_alias_table_is_exact(num_classes):
  rng = np.random.default_rng(num_classes)
  for power in (0.0, 0.75, 1.0):
    for _ in range(5):
      weights = rng.gamma(0.3, size=num_classes) * (rng.random(num_classes) > 0.3)
      weights[rng.integers(num_classes)] += 1.0
      assert_table_exact(unigram_sampler(weights, power), target_distribution(weights, power))


def test_alias_table_under_jit_matches_numpy():
  weights = jnp.asarray(ZIPF, jnp.float32)
  q = target_distribution(ZIPF, 0.75)
  assert_table_exact(jax.jit(unigram_sampler, static_argnums=1)(weights, 0.75), q)
  assert_table_exact(jax.jit(unigram_sampler)(weights, jnp.float32(0.75)), q)  # traced power
  assert_table_exact(unigram_sampler(ZIPF, 0.75), q)


@pytest.mark.parametrize("num_classes", [100_000, 1_000_000])
@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "traced"])
def test_alias_table_is_exact_for_zipf_counts(num_classes, traced):
  """Word-count-like counts (1e9 / i^1.05, power 0.75): exact to float32 rounding.

  Prefix sums of the deficits in float32 gave classes half or twice their mass here.
  """
  counts = 1e9 / np.arange(1, num_classes + 1, dtype=np.float64) ** 1.05
  build = jax.jit(unigram_sampler, static_argnums=1) if traced else unigram_sampler
  sampler = build(jnp.asarray(counts, jnp.float32) if traced else counts, 0.75)
  q = target_distribution(counts, 0.75)
  assert_table_exact(sampler, q)
  assert max_relative_error(sampler, q) < 1e-5


@pytest.mark.parametrize("traced", [False, True], ids=["concrete", "traced"])
def test_alias_table_with_zeros_and_a_huge_count(traced):
  rng = np.random.default_rng(7)
  counts = rng.integers(0, 1000, size=5000).astype(np.float64)
  counts[rng.random(5000) < 0.3] = 0.0
  counts[123] = 1e30
  build = jax.jit(unigram_sampler, static_argnums=1) if traced else unigram_sampler
  for power in (0.5, 1.0):
    sampler = build(jnp.asarray(counts, jnp.float32) if traced else counts, power)
    assert_table_exact(sampler, target_distribution(counts, power))


@st.composite
def count_vectors(draw):
  """Counts of 1 to 300 classes: integers or floats, with zeros and maybe one huge count.

  The number of classes is 1, 2, 3 or 300 (shorter vectors padded with zeros at random
  places), so that a few compiled tables serve every example.
  """
  length = draw(st.integers(1, 300))
  size = length if length <= 3 else 300
  if draw(st.booleans()):
    values = st.integers(0, 10**6).map(float)
  else:
    values = st.floats(1e-3, 1e6)
  counts = np.array(draw(st.lists(st.one_of(st.just(0.0), values), min_size=length,
                                  max_size=length)))
  if draw(st.booleans()):
    counts[draw(st.integers(0, length - 1))] = 1e30
  if not np.any(counts > 0):
    counts[draw(st.integers(0, length - 1))] = draw(values.filter(lambda x: x > 0))
  padded = np.zeros(size)
  padded[np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(size)[:length]] = (
    counts
  )
  return padded


_traced_sampler = jax.jit(unigram_sampler, static_argnums=1)


@settings(max_examples=30, deadline=None)
@given(counts=count_vectors(), power=st.sampled_from([0.0, 0.5, 0.75, 1.0]))
def test_alias_table_is_exact_for_any_counts(counts, power):
  q = target_distribution(counts, power)
  assert_table_exact(unigram_sampler(counts, power), q)
  assert_table_exact(_traced_sampler(jnp.asarray(counts, jnp.float32), power), q)


def test_bucket_and_coin_are_the_fixed_point_product():
  """Bucket and coin are the integer part and next 32 bits of u V / 2^64, exactly."""
  rng = np.random.default_rng(0)
  words = rng.integers(0, 2**32, size=(2, 1000), dtype=np.uint64).astype(np.uint32)
  words[:, :4] = [[0, 0, 2**32 - 1, 2**32 - 1], [0, 2**32 - 1, 0, 2**32 - 1]]
  for v in (1, 2, 3, 1000, 65_535, 65_536, 65_537, 10**7, 2**31 - 1):
    bucket, coin = jax.jit(_bucket_and_coin, static_argnums=2)(*jnp.asarray(words), v)
    for high, low, b, c in zip(*words.tolist(), bucket.tolist(), coin.tolist(), strict=True):
      product = ((high << 32) + low) * v
      assert b == product >> 64 and c == (product >> 32) & (2**32 - 1), (v, high, low)
      assert 0 <= b < v


def test_unigram_frequencies_beyond_16_bit_vocabularies():
  """Chi-square at V = 70,000 (bucket arithmetic past 16 bits): every class drawn >= 20x."""
  num_classes, n = 70_000, 2**22
  counts = 1.0 + np.random.default_rng(3).random(num_classes) * 10.0
  sampler = unigram_sampler(counts, 0.75)
  ids = jax.jit(lambda k: sampler.sample(k, (n,)))(jax.random.key(8))
  assert_chi_square(ids, target_distribution(counts, 0.75))


def test_probs_sum_to_one_and_match_formulas():
  s = samplers()
  for sampler in s.values():
    assert float(jax.nn.logsumexp(sampler.log_prob(jnp.arange(V)))) == pytest.approx(0, abs=1e-6)
  w = np.arange(V)
  np.testing.assert_allclose(
    s["log_uniform"].probs(), np.log((w + 2) / (w + 1)) / np.log(V + 1), rtol=1e-5
  )
  np.testing.assert_allclose(s["uniform"].probs(), np.full(V, 1 / V), rtol=1e-6)


def test_sampler_frequencies_chi_square():
  s = samplers()
  keys = jax.random.split(jax.random.key(0), len(s))
  for key, sampler in zip(keys, s.values(), strict=True):
    ids = jax.jit(lambda k, smp: smp.sample(k, (200_000,)))(key, sampler)
    assert ids.dtype == jnp.int32 and ids.shape == (200_000,)
    assert_chi_square(ids, sampler.probs(), num_checks=len(s))


def test_log_uniform_tail_at_a_million_classes():
  """The rarest half of a 10^6 vocabulary gets its exact mass (32-bit uniforms)."""
  num_classes, n = 1_000_000, 2_000_000
  sampler = LogUniformSampler(num_classes)
  ids = np.asarray(jax.jit(lambda k: sampler.sample(k, (n,)))(jax.random.key(1)))
  assert ids.min() >= 0 and ids.max() < num_classes
  z = z_value(3)
  for lo, hi in [(500_000, 1_000_000), (900_000, 1_000_000), (999_000, 1_000_000)]:
    p = (math.log(hi + 1) - math.log(lo + 1)) / math.log(num_classes + 1)
    frac = np.mean((ids >= lo) & (ids < hi))
    assert abs(frac - p) <= z * math.sqrt(p * (1 - p) / n), (lo, hi, frac, p)


def test_log_uniform_inversion_resolves_the_tail():
  """Each id of the rarest tail of a 10^6 vocabulary gets its share of the random inputs.

  Sweeping every value of the 24 fractional bits over two adjacent top blocks, the ids
  are monotone in the input and each id wholly inside gets ``2^38 q(w)`` inputs to
  0.1% (a float32 ``exp(u log(V + 1))`` misses by 20% on average there).
  """
  num_classes = 1_000_000
  top = 2**14 - 2
  fraction = jnp.arange(2**24, dtype=jnp.uint32) << 8
  invert = jax.jit(_log_uniform_ids, static_argnums=2)
  ids = np.concatenate(
    [
      np.asarray(invert(jnp.full(fraction.shape, j << 18, jnp.uint32), fraction, num_classes))
      for j in (top, top + 1)
    ]
  )
  assert np.all(np.diff(ids) >= 0) and ids.max() == num_classes - 1
  counts = np.bincount(ids, minlength=num_classes)
  inner = np.arange(ids.min() + 1, ids.max())
  expected = 2.0**38 * np.asarray(LogUniformSampler(num_classes).probs(), np.float64)[inner]
  assert inner.size > 1000
  assert np.max(np.abs(counts[inner] - expected) / expected) < 1e-3


def test_expected_counts_with_replacement():
  sampler = unigram_sampler(ZIPF, 0.75)
  ids = jnp.arange(V)
  np.testing.assert_allclose(sampler.expected_count(ids, 64), 64 * sampler.probs(), rtol=1e-5)
  np.testing.assert_allclose(
    log_expected_count(jnp.log(0.25), 3, unique=True), math.log(1 - 0.75**3), rtol=1e-6
  )
  # Monte Carlo: the mean number of copies of each class among 64 draws.
  draws = sampler.sample(jax.random.key(2), (4000, 64))
  counts = np.stack([np.bincount(row, minlength=V) for row in np.asarray(draws)])
  mean, se = counts.mean(0), counts.std(0, ddof=1) / math.sqrt(counts.shape[0])
  expected = np.asarray(sampler.expected_count(ids, 64))
  assert np.all(np.abs(mean - expected) <= z_value(V) * se + 1e-9)


def test_unique_candidates_are_a_sample_without_replacement():
  """Inclusion probabilities against the exact ones of successive sampling (V=5, k=2)."""
  probs = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
  sampler = unigram_sampler(probs, 1.0)
  labels = jnp.zeros((1, 1), jnp.int32)
  reps = 20_000
  draw = jax.jit(jax.vmap(lambda k: sample_candidates(sampler, k, labels, 2, unique=True)))
  c = draw(jax.random.split(jax.random.key(3), reps))
  ids = np.asarray(c.sampled)
  assert np.all(ids[:, 0] != ids[:, 1])
  inclusion = np.zeros(5)
  for w in range(5):
    inclusion[w] = np.mean(np.any(ids == w, axis=1))
  exact = probs + np.array(
    [sum(probs[u] * probs[w] / (1 - probs[u]) for u in range(5) if u != w) for w in range(5)]
  )
  se = np.sqrt(exact * (1 - exact) / reps)
  assert np.all(np.abs(inclusion - exact) <= z_value(5) * se), (inclusion, exact)
  # The first candidate is a plain draw from q.
  assert_chi_square(ids[:, 0], probs)


def test_unique_number_of_tries():
  """Uniform V=10, k=5: E[tries] = sum_i 10 / (10 - i) (coupon collector)."""
  sampler = UniformSampler(10)
  labels = jnp.zeros((1, 1), jnp.int32)
  reps = 5000
  draw = jax.jit(jax.vmap(lambda k: sample_candidates(sampler, k, labels, 5, unique=True)))
  tries = np.asarray(draw(jax.random.split(jax.random.key(4), reps)).num_tries, np.float64)
  expected = sum(10 / (10 - i) for i in range(5))
  assert tries.min() >= 5
  assert abs(tries.mean() - expected) <= z_value(1) * tries.std(ddof=1) / math.sqrt(reps)


def test_unique_expected_counts_against_monte_carlo():
  """TensorFlow's rule 1 - (1 - q)^tries against inclusion frequencies.

  The rule takes the number of tries as given, which over-states the inclusion of the
  few classes whose expected count is near 1 or above (at V=200, k=16, log-uniform:
  the most frequent class is included 92.8% of the time, against 93.9% predicted); for
  the classes the losses mostly see, with expected counts below 1/2, it is exact within
  the Monte Carlo error checked here.
  """
  num_classes, k, reps = 200, 16, 20_000
  sampler = LogUniformSampler(num_classes)
  labels = jnp.zeros((1, 1), jnp.int32)
  draw = jax.jit(jax.vmap(lambda key: sample_candidates(sampler, key, labels, k, unique=True)))
  c = draw(jax.random.split(jax.random.key(5), reps))
  ids = np.asarray(c.sampled)
  included = np.zeros((reps, num_classes))
  np.put_along_axis(included, ids, 1.0, axis=1)
  assert np.all(included.sum(1) == k)  # k distinct ids per set
  # The expected counts returned for the sampled ids follow the rule with num_tries.
  q = np.asarray(sampler.probs(), np.float64)
  tries = np.asarray(c.num_tries, np.float64)
  rule = 1.0 - (1.0 - q[ids]) ** tries[:, None]
  np.testing.assert_allclose(np.exp(c.sampled_log_expected_count), rule, rtol=2e-4)
  predicted = np.mean(1.0 - (1.0 - q[None, :]) ** tries[:, None], axis=0)
  frequency = included.mean(0)
  se = included.std(0, ddof=1) / math.sqrt(reps)
  small = predicted < 0.5
  assert small.sum() > 150
  assert np.all(np.abs(frequency - predicted)[small] <= z_value(small.sum()) * se[small])


def test_shared_and_per_example_shapes():
  sampler = LogUniformSampler(1000)
  labels = jnp.array([[1, 2], [3, 4], [5, 6]])
  shared = sample_candidates(sampler, jax.random.key(0), labels, 8)
  assert isinstance(shared, Candidates)
  assert shared.sampled.shape == (8,) and shared.sampled_log_expected_count.shape == (8,)
  assert shared.true_log_expected_count.shape == (3, 2) and shared.num_tries.shape == ()
  per = sample_candidates(sampler, jax.random.key(0), labels, 8, shared_negatives=False)
  assert per.sampled.shape == (3, 8) and per.num_tries.shape == (3,)
  assert per.true_log_expected_count.shape == (3, 2)
  np.testing.assert_allclose(
    per.true_log_expected_count, jnp.log(8.0) + sampler.log_prob(labels), rtol=1e-6
  )
  # Per-example sets differ from one another.
  assert len({tuple(row) for row in np.asarray(per.sampled).tolist()}) == 3


@pytest.mark.parametrize("unique", [False, True])
def test_exclude_true_labels(unique):
  sampler = unigram_sampler(ZIPF, 0.75)
  labels = jnp.array([[0], [1], [0]])  # the two most frequent classes; one repeated
  reps = 4000
  draw = jax.jit(
    jax.vmap(
      lambda k: sample_candidates(sampler, k, labels, 10, unique=unique, exclude_true=True)
    )
  )
  c = draw(jax.random.split(jax.random.key(6), reps))
  ids = np.asarray(c.sampled)
  assert not np.isin(ids, [0, 1]).any()
  q = np.asarray(sampler.probs(), np.float64)
  restricted = q.copy()
  restricted[[0, 1]] = 0.0
  restricted /= restricted.sum()
  if not unique:
    assert_chi_square(ids, restricted)
    np.testing.assert_allclose(
      np.exp(c.sampled_log_expected_count), 10 * restricted[ids], rtol=1e-4
    )
  else:
    assert_chi_square(ids[:, 0], restricted)  # the first draw follows q restricted
    assert all(len(set(row)) == 10 for row in ids.tolist())
  # The true labels keep the unrestricted noise density.
  expected_true = log_expected_count(
    sampler.log_prob(labels)[None], c.num_tries[:, None, None], unique=unique
  )
  np.testing.assert_allclose(c.true_log_expected_count, expected_true, rtol=1e-5, atol=1e-6)
  # Per example: an example's own labels are excluded, the others' may be drawn.
  per = sample_candidates(
    sampler, jax.random.key(7), labels, 200, unique=False, shared_negatives=False,
    exclude_true=True,
  )
  for row, label in zip(np.asarray(per.sampled), np.asarray(labels)[:, 0], strict=True):
    assert label not in row
  assert np.any(np.asarray(per.sampled)[0] == labels[1, 0])  # another example's label


def test_accidental_hits():
  labels = jnp.array([[1, 4], [2, 3]])
  hits = accidental_hits(labels, jnp.array([4, 2, 9]))
  assert hits.tolist() == [[True, False, False], [False, True, False]]
  per = accidental_hits(labels, jnp.array([[1, 1, 0], [3, 0, 0]]))
  assert per.tolist() == [[True, True, False], [True, False, False]]
  with pytest.raises(ValueError, match="sampled must have shape"):
    accidental_hits(labels, jnp.zeros((3, 3), jnp.int32))


def test_jit_and_vmap():
  for sampler in samplers().values():
    ids = jax.jit(lambda k, s: s.sample(k, (4, 3)))(jax.random.key(0), sampler)
    assert ids.shape == (4, 3)
    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.vmap(lambda k, s: s.sample(k, (5,)), in_axes=(0, None))(keys, sampler)
    assert batched.shape == (3, 5)
    lp = jax.jit(lambda s, i: s.log_prob(i))(sampler, ids)
    assert lp.shape == (4, 3) and lp.dtype == jnp.float32
    # Same key, same draws.
    np.testing.assert_array_equal(sampler.sample(jax.random.key(0), (4, 3)), ids)
  labels = jnp.array([[1], [2]])
  c = jax.jit(
    lambda k, s: sample_candidates(s, k, labels, 6, unique=True, exclude_true=True)
  )(jax.random.key(0), LogUniformSampler(V))
  assert c.sampled.shape == (6,)


def test_bad_input():
  with pytest.raises(ValueError, match="counts must be nonnegative"):
    unigram_sampler(np.array([1.0, -2.0, 3.0]))
  with pytest.raises(ValueError, match="power must be"):
    unigram_sampler(ZIPF, -0.5)
  with pytest.raises(ValueError, match="counts must have shape"):
    unigram_sampler(np.ones((3, 3)))
  with pytest.raises(ValueError, match="at least one positive"):
    unigram_sampler(np.zeros(4))
  with pytest.raises(ValueError, match="num_classes must be >= 1"):
    UniformSampler(0)
  with pytest.raises(TypeError, match="num_classes must be a Python int"):
    LogUniformSampler(10.5)
  sampler = UniformSampler(10)
  labels = jnp.array([[1], [2]])
  with pytest.raises(ValueError, match="num_sampled must be >= 1"):
    sample_candidates(sampler, jax.random.key(0), labels, 0)
  with pytest.raises(TypeError, match="num_sampled must be a Python int"):
    sample_candidates(sampler, jax.random.key(0), labels, 2.0)
  with pytest.raises(ValueError, match="num_sampled must be <= 10 for unique"):
    sample_candidates(sampler, jax.random.key(0), labels, 11, unique=True)
  with pytest.raises(ValueError, match="minus 2 excluded"):
    sample_candidates(sampler, jax.random.key(0), labels, 9, unique=True, exclude_true=True)
  with pytest.raises(ValueError, match=r"labels must lie in \[0, num_classes\)"):
    sample_candidates(sampler, jax.random.key(0), jnp.array([[10]]), 2)
  with pytest.raises(TypeError, match="labels must be integer"):
    sample_candidates(sampler, jax.random.key(0), jnp.array([[1.0]]), 2)
  with pytest.raises(TypeError, match="sampler must be a gradest sampler"):
    sample_candidates(object(), jax.random.key(0), labels, 2)
  with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
    sampler.sample(0, (3,))


def test_log_expected_count_of_no_draws_is_minus_inf():
  """Zero draws give an expected count of 0 for every q, q = 1 included (not NaN)."""
  log_q = jnp.log(jnp.array([1.0, 0.5, 1e-9, 0.0]))
  for unique in (False, True):
    out = log_expected_count(log_q, 0, unique=unique)
    np.testing.assert_array_equal(np.asarray(out), -np.inf)
    jitted = jax.jit(log_expected_count, static_argnames="unique")
    np.testing.assert_array_equal(np.asarray(jitted(log_q, 0, unique=unique)), -np.inf)
  # One draw: q itself, and 1 for the class of probability 1.
  out = log_expected_count(log_q, 1, unique=True)
  np.testing.assert_allclose(np.exp(np.asarray(out)), [1.0, 0.5, 1e-9, 0.0], rtol=1e-5)


SPARSE = np.array([5.0, 0, 0, 3, 0, 0, 0, 0])


@pytest.mark.parametrize(
  "labels, num_sampled, kwargs, match",
  [
    ([[0], [3]], 2, dict(exclude_true=True, unique=False), "0 classes nonzero"),
    ([[0], [3]], 3, dict(unique=True), "2 classes nonzero"),
    ([[0], [3]], 1, dict(unique=True, exclude_true=True), "outside the excluded"),
    ([[1]], 2, dict(unique=False), "never draws"),
  ],
)
def test_undrawable_sets_are_refused_when_concrete(labels, num_sampled, kwargs, match):
  # Regression: these redrew forever (excluded labels holding all of q's mass, fewer
  # nonzero classes than distinct draws), or gave a silent zero loss (label with q = 0).
  sampler = unigram_sampler(SPARSE)
  with pytest.raises(ValueError, match=match):
    sample_candidates(sampler, jax.random.key(0), jnp.array(labels), num_sampled, **kwargs)


@pytest.mark.parametrize("unique", [False, True])
def test_undrawable_sets_stop_under_jit_and_are_left_out(unique):
  # Traced inputs cannot be checked: the draw stops after MAX_DRAW_ROUNDS and the empty
  # slots get an infinite log expected count, which every loss leaves out.
  from gradest import sampled_logits_loss

  labels = jnp.array([[0], [3]])
  num_sampled = 3 if unique else 2
  draw = jax.jit(lambda s, y: sample_candidates(
    s, jax.random.key(0), y, num_sampled, unique=unique, exclude_true=not unique))
  c = draw(unigram_sampler(SPARSE), labels)
  empty = np.isinf(np.asarray(c.sampled_log_expected_count))
  assert empty.sum() == (1 if unique else 2)
  assert np.all(np.asarray(c.sampled)[empty] == 0)
  assert np.all(np.isfinite(np.asarray(c.sampled_log_expected_count)[~empty]))

  hidden = jnp.ones((2, 4))
  weights = jax.random.normal(jax.random.key(1), (8, 4))
  for loss in ("nce", "sampled_softmax", "negative_sampling", "ranking_nce"):
    def total(w, s, loss=loss):
      return sampled_logits_loss(
        hidden, w, None, labels, jax.random.key(0), sampler=s, num_sampled=num_sampled,
        unique=unique, exclude_true=not unique, loss=loss).sum()

    value, grad = jax.jit(jax.value_and_grad(total))(weights, unigram_sampler(SPARSE))
    assert np.isfinite(value) and np.all(np.isfinite(grad)), loss


def test_uniform_sampler_is_uniform_for_large_vocabularies():
  # Regression: one 32-bit word reduced modulo V gave P(id < 2**30) = 3/4 for V = 3 * 2**29.
  num_classes, n = 3 * 2**29, 2**20
  ids = np.asarray(UniformSampler(num_classes).sample(jax.random.key(0), (n,)))
  assert ids.min() >= 0 and ids.max() < num_classes
  p = 2**30 / num_classes
  assert abs((ids < 2**30).mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
