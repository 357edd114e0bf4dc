"""What if young collections ran 30x less often? (CPython's default threshold is 700.)"""

from __future__ import annotations

import gc

gc.set_threshold(20_000, 20, 20)
