"""The one consumer dialect: contract classes mapped to `when_<event>_<action>(event, uow)` handlers."""

from __future__ import annotations

from services.kernel import events as _events
from services.kernel.consumer import group
from services.kernel.events import Envelope, Event


class _ThingHappened(Event):
    type = "cn.recycle.test.thing.happened.v1"
    topic = "test.thing"
    key_field = "thing_id"
    source = "/test"
    thing_id: str
    weight_g: int


class _OtherThing(Event):
    type = "cn.recycle.test.other.done.v1"
    topic = "test.other"
    key_field = "other_id"
    source = "/test"
    other_id: str


# test-only types stay out of the registry (the catalogue and topic declarations read it)
for _cls in (_ThingHappened, _OtherThing):
    _events._REGISTRY.pop(_cls.type)


def test_group_derives_topics_and_decodes_typed_events() -> None:
    seen: list[object] = []

    def when_thing_happened_keep(event: _ThingHappened, uow: object) -> None:
        seen.append(event)

    spec = group("test.things", {_ThingHappened: when_thing_happened_keep, _OtherThing: lambda e, u: None})
    assert spec.topics == ["test.other", "test.thing"]
    assert set(spec.handlers) == {_ThingHappened.type, _OtherThing.type}
    env = Envelope.wrap(_ThingHappened(thing_id="t1", weight_g=5))
    spec.handlers[_ThingHappened.type](env, None)  # type: ignore[arg-type]
    assert seen == [_ThingHappened(thing_id="t1", weight_g=5)]


def test_decode_ignores_unknown_fields_but_building_stays_strict() -> None:
    data = {"thing_id": "t1", "weight_g": 5, "added_in_a_later_minor_version": True}
    assert _ThingHappened.decode(data) == _ThingHappened(thing_id="t1", weight_g=5)
    try:
        _ThingHappened(thing_id="t1", weight_g=5, extra=1)  # type: ignore[call-arg]
    except ValueError:
        pass
    else:
        raise AssertionError("building an event with an unknown field must fail")
