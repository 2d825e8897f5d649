"""Command-line tools behind bin/ (absl apps)."""
