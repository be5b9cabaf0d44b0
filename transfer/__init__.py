"""transfer: see DESIGN.md; not yet implemented."""
