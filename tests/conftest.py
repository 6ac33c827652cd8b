import jax
import pytest

# Run only as a subprocess by test_sharding.py (it needs 8 simulated devices at start-up).
collect_ignore = ["sharded_check.py"]


@pytest.fixture
def key():
  return jax.random.key(0)
