"""Published integration events: the contracts between services, one module per publisher.

A service imports another's events only from here (never from `services.<other>`). Contracts are versioned in
their `type` (`...v1`); a breaking change is a new class with `v2`, published beside the old one until every
consumer has moved. Consumers decode tolerantly (`Event.decode`): unknown fields are ignored.
A service's internal events (only it consumes them) stay in its own `domain/events.py`.
"""
