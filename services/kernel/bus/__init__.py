"""The event bus port and its adapters (the embedded database log, Kafka)."""

from .port import EventBus, Record, Subscription, TopicSpec  # noqa: F401
