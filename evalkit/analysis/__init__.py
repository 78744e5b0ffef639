"""Analysis of result records: paired comparison, the CI gate, scaling-law fits and claims (no rendering)."""
