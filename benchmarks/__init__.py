"""Runnable benchmarks of gradest (``python -m benchmarks.<name>``).

They need the ``bench`` extra; without it, importing any of them says what to install.
"""

from gradest._src.base import require_extra

require_extra(["numpy", "scipy", "matplotlib", "tqdm", "sklearn"], "bench", "gradest's benchmarks")
