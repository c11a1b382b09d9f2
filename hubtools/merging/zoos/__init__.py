"""Model zoos with known structure for Model-GLUE tests and benchmarks (synthetic, fortunes, MiniLM)."""
