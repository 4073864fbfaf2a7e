"""Work botocore repeats on every request although its answer never changes for mediad, skipped.

botocore's own CPU per request, not the bytes, is what limits the archive stage on small files.
Their PUTs no longer go through botocore (s3put.py), but the HEADs (a verify, a server whose PUT
answers prove nothing) and every request of a multipart upload do. Each shortcut here reaches
into botocore where its public interface has no switch, so each is guarded: when what it needs
is not where expected (another botocore), it changes nothing and is missing from the set `apply`
returns (`S3.shortcuts`). What each buys is measured by `benchmarks/s3_requests.py` (CPU per
request of a small file, against SeaweedFS, all shortcuts on against all but one). Tests pin
that each is taken with the botocore installed and leaves the requests as botocore makes them
(tests/integration/test_archive.py), and that each guard holds (tests/unit/test_s3_shortcuts.py).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

# The figures below: CPU per small file (50-300 kB, PUT + verifying HEAD, 4.3-6.2 ms with both
# shortcuts) saved by one, the median of benchmarks/s3_requests.py's rounds on 2 shared CPUs with
# botocore 1.40.61 and aiobotocore 2.25.1 (four runs; the range is of their medians). Both off:
# +1.0 to 1.6 ms per file, +23 to 26%.
ENDPOINT_WITHOUT_KEY = "endpoint_without_key"
USER_AGENT_ONCE = "user_agent_once"
ALL = frozenset({ENDPOINT_WITHOUT_KEY, USER_AGENT_ONCE})


def apply(client: Any, botocore_session: Any, names: Collection[str]) -> frozenset[str]:
    """Take the shortcuts of `names` on a new client; the names of those taken."""
    applied = set()
    if ENDPOINT_WITHOUT_KEY in names and _endpoint_without_key(client, botocore_session):
        applied.add(ENDPOINT_WITHOUT_KEY)
    if USER_AGENT_ONCE in names and _user_agent_once(client):
        applied.add(USER_AGENT_ONCE)
    return frozenset(applied)


def _endpoint_without_key(client: Any, botocore_session: Any) -> bool:
    """Endpoint resolution runs S3's rule set with the object key among its inputs. The rules
    never read the key, but the result is cached by all inputs, so every new key misses the
    cache and runs the rules again (the HEAD after the PUT of the same key hits it). Resolving
    without the key gives the same endpoint, cached. Only done when the loaded rule set indeed
    never reads the key.

    Saves 0.4-0.7 ms per small file, 9-13% of its CPU."""
    provider: Any = getattr(getattr(client, "_ruleset_resolver", None), "_provider", None)
    resolve = getattr(provider, "resolve_endpoint", None)
    if not callable(resolve):
        return False
    try:
        rules = botocore_session.get_component("data_loader").load_service_model(
            "s3", "endpoint-rule-set-1", client.meta.service_model.api_version
        )
    except Exception:  # not the botocore this was written for: leave it alone
        return False
    if not isinstance(rules, dict) or "rules" not in rules or reads(rules["rules"], "Key"):
        return False

    def resolve_endpoint(**params: Any) -> Any:
        params.pop("Key", None)
        return resolve(**params)

    provider.resolve_endpoint = resolve_endpoint
    return True


def _user_agent_once(client: Any) -> bool:
    """The User-Agent string is built twice per request (about 0.1 ms each); for mediad's
    requests it is the same string every time, so it is built once.

    Saves 0.6-1.0 ms per small file, 11-13% of its CPU."""
    creator: Any = getattr(client, "_user_agent_creator", None)
    build = getattr(creator, "to_string", None)
    if not callable(build):
        return False
    user_agent = build()
    if not isinstance(user_agent, str):
        return False
    creator.to_string = lambda: user_agent
    return True


def reads(node: Any, name: str) -> bool:
    """Whether an endpoint rule (set) refers to parameter `name`."""
    if isinstance(node, dict):
        return node.get("ref") == name or any(reads(v, name) for v in node.values())
    if isinstance(node, list):
        return any(reads(v, name) for v in node)
    return isinstance(node, str) and "{" + name in node
