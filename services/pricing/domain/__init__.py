"""Pricing domain, free of I/O.

- `index_math`: observations → series values (outlier filter, quorum, tier preference, VWAP), region
  fallback, family/composite indices (chain-linked Laspeyres), and `compute_many` for whole days at once.
- `methodology`: the versioned methodology config and the document generated from it.
- `events`: what the pricing service publishes.
"""
