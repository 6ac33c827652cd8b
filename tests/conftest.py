import os

import jax
import pytest
from hypothesis import HealthCheck, settings

# Property-based tests: a bounded, reproducible profile for the suite and CI
# (HYPOTHESIS_PROFILE=thorough explores more).
settings.register_profile(
  "default",
  max_examples=20,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Run only as subprocesses by test_sharding.py (they need 8 simulated devices at start-up)
# and by test_multiprocess.py (two processes joined by jax.distributed).
collect_ignore = ["sharded_check.py", "sharded_fisher_check.py", "multiprocess_check.py"]


@pytest.fixture
def key():
  return jax.random.key(0)
