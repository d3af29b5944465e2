"""Dynamic checks: one module per check (a `Check` subclass with its docs and its passing and failing setups).

The machinery they run on (spec, isolation, trace, sessions, runner) lives in
``pytest_traincheck.harness``. Importing this package does not import torch; its modules do.
"""
