"""generator: see DESIGN.md; not yet implemented."""
