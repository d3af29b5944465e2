"""Dynamic checks: run the user's own model and training step under instrumentation.

One module per check (a `Check` subclass with its own passing and failing
example setups); `harness.py` isolates and bounds each run, `trace.py`
observes it through public torch hooks. Importing this package does not
import torch; its modules do.
"""
