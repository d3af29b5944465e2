"""Static lint rules: one module per rule, discovered by ``registry.all_rules``."""
