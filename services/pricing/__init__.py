"""Pricing service (再生资源价格指数): price observations, daily series and family indices, the methodology,
restatements.

`domain/` holds the I/O-free rules: `index_math` (outlier filter, quorum, volume-weighted series values,
fallbacks, chain-linked Laspeyres indices, the vectorised batch path) and `methodology` (the versioned
config in `methodology.toml` and the methodology document rendered from it).
"""
