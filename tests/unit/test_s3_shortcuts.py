"""botocore shortcuts of the S3 client: taken only where botocore's internals are as expected."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from mediad.storage import s3shortcuts

RULES_WITHOUT_KEY = {"rules": [{"argv": [{"ref": "Bucket"}], "url": "https://{Bucket}.s3"}]}


def test_endpoint_shortcut_only_for_rules_that_never_read_the_key() -> None:
    """The endpoint cache drops the object key only when the rule set does not use it."""
    assert s3shortcuts.reads(
        {"rules": [{"conditions": [{"fn": "isSet", "argv": [{"ref": "Key"}]}]}]}, "Key"
    )
    assert s3shortcuts.reads([{"endpoint": {"url": "https://{Key}.example"}}], "Key")
    assert not s3shortcuts.reads(
        [{"argv": [{"ref": "Bucket"}], "url": "https://{Bucket}.s3"}], "Key"
    )


def botocore_like(rules: Any) -> tuple[Any, Any]:
    """A client and session shaped as the shortcuts expect, around `rules`."""

    def resolve_endpoint(**params: Any) -> Any:
        return params

    def load_service_model(service: str, kind: str, version: str) -> Any:
        if isinstance(rules, Exception):
            raise rules
        return rules

    user_agent = SimpleNamespace(built=[])

    def to_string() -> str:
        user_agent.built.append(1)
        return "ua/1"

    user_agent.to_string = to_string
    client = SimpleNamespace(
        _ruleset_resolver=SimpleNamespace(
            _provider=SimpleNamespace(resolve_endpoint=resolve_endpoint)
        ),
        _user_agent_creator=user_agent,
        meta=SimpleNamespace(service_model=SimpleNamespace(api_version="2006-03-01")),
    )
    session = SimpleNamespace(
        get_component=lambda name: SimpleNamespace(load_service_model=load_service_model)
    )
    return client, session


def test_shortcuts_are_taken_where_botocore_is_as_expected() -> None:
    """The endpoint is resolved without the key and the User-Agent built once."""
    client, session = botocore_like(RULES_WITHOUT_KEY)
    assert s3shortcuts.apply(client, session, s3shortcuts.ALL) == s3shortcuts.ALL
    resolve = client._ruleset_resolver._provider.resolve_endpoint
    assert resolve(Bucket="b", Key="k") == {"Bucket": "b"}
    built = client._user_agent_creator.built
    assert [client._user_agent_creator.to_string() for _ in range(3)] == ["ua/1"] * 3
    assert built == client._user_agent_creator.built == [1]
    client, session = botocore_like(RULES_WITHOUT_KEY)
    assert s3shortcuts.apply(client, session, ()) == frozenset()
    assert client._ruleset_resolver._provider.resolve_endpoint(Key="k") == {"Key": "k"}


def test_an_unfamiliar_botocore_is_left_alone() -> None:
    """Where the internals are missing or not what the shortcuts expect, none is taken and
    nothing is changed: no attribute, a rule set that reads the key, one that fails to load."""
    assert s3shortcuts.apply(object(), object(), s3shortcuts.ALL) == frozenset()
    broken: list[Any] = [{"rules": [{"ref": "Key"}]}, {"version": "2"}, [], LookupError("no")]
    for rules in broken:
        client, session = botocore_like(rules)
        before = client._ruleset_resolver._provider.resolve_endpoint
        taken = s3shortcuts.apply(client, session, {s3shortcuts.ENDPOINT_WITHOUT_KEY})
        assert taken == frozenset(), rules
        assert client._ruleset_resolver._provider.resolve_endpoint is before
    client, session = botocore_like(RULES_WITHOUT_KEY)
    client._user_agent_creator = SimpleNamespace(to_string=lambda: None)
    assert s3shortcuts.apply(client, session, s3shortcuts.ALL) == {s3shortcuts.ENDPOINT_WITHOUT_KEY}
