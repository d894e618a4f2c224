"""Pricing service (再生资源价格指数): price observations, daily series and family indices, the methodology,
restatements. See docs/pricing.md.

- `domain/`: the I/O-free rules: `index_math` (outlier filter, quorum, volume-weighted series values, fallbacks,
  chain-linked Laspeyres indices, the vectorised batch path), `methodology` (the versioned config in
  `methodology.toml` and the document rendered from it), `observations` (sources, tiers, self-dealing),
  `commands` (request shapes), `events`.
- `intake.py`: stores inputs from every source; `compute.py`: the daily computation; `audit.py`: the compact
  audit trail; `queries.py`: the read side; `handlers.py`, `api.py`, `tasks.py`, `cli.py`: the entry points.
"""
