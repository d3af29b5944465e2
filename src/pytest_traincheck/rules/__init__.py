"""Static lint rules: one module per rule, discovered by ``pytest_traincheck.lint.registry.all_rules``."""
