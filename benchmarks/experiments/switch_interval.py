"""Experiment: the GIL's switch interval at 1 ms instead of CPython's 5 ms.

A thread of the gateway doing Python work (a registry query for a tool call, the usage
writer) keeps the GIL for up to the switch interval while the event loop waits for it.
"""

from __future__ import annotations

import sys

sys.setswitchinterval(0.001)
