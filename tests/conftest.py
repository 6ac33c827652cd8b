import jax
import pytest

# Run only as subprocesses by test_sharding.py (they need 8 simulated devices at start-up).
collect_ignore = ["sharded_check.py", "sharded_fisher_check.py"]


@pytest.fixture
def key():
  return jax.random.key(0)
