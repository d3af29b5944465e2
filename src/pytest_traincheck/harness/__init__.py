"""The dynamic engine: the `Training` spec, isolation, the instrumented run, sessions, the runner and results.

Checks live in ``pytest_traincheck.checks`` (one module per code). Importing this
package does not import torch; its modules do.
"""
