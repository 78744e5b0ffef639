"""Model definitions (big_vision-compatible parameter trees)."""
