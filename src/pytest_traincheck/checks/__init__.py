"""Dynamic checks: one module per check (a `Check` subclass with its docs and its passing and failing setups)."""
