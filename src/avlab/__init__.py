"""avlab."""
