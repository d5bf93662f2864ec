"""volprep."""
