"""avlab test suite."""
