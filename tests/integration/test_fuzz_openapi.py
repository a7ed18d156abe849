"""Schemathesis over the published OpenAPI schema, against a real server, with every check and every method.

This is the Python-API equivalent of ``schemathesis run --checks all --mode all``:
schemathesis's own engine runs its phases (examples, coverage, fuzzing,
stateful) with every registered check: no 5xx, no status code, content type,
header or body off the schema, every schema-valid request accepted and every
schema-violating one refused (the schema is exact), no ignored auth. The
coverage phase also sends each path the methods it does not document,
``OPTIONS`` included, and checks the ``Allow`` answer.

Push and pull document their request bodies (``transport/body_schema.py``), so
the fuzzer sends real changes and pulls, not empty bodies. The number of
examples per operation is bounded (``FUZZ_EXAMPLES``, default 10) so the run
stays under about two minutes; raise it locally for a deeper search.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events

from syncserver.auth.tokens import TokenVerifier
from syncserver.testing import cli, free_port, running_server, server_env

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
EVERY_METHOD = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "TRACE"]
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]  # schemathesis default
"""Schemathesis's default answers to a schema-valid request (5xx is caught by its own check)."""
ERASE = "/v1/admin/tenant/erase"
"""Fuzzed as the admin of a tenant of its own, so a lucky ``confirm`` erases only that one."""

pytestmark = pytest.mark.slow


@dataclass
class Live:
    base: str
    headers: dict[str, str]
    erase_headers: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = server_env(tmp, f"sqlite+aiosqlite:///{tmp / 'sync.db'}", SYNC_LOG_LEVEL="WARNING")
    verifier = TokenVerifier(env["SYNC_JWT_SECRET"], "syncserver", "sync")
    for tenant in ("acme", "doomed"):
        cli(env, "tenant", "create", tenant)
    token, doomed = verifier.issue("acme", "fuzzer", "admin"), verifier.issue("doomed", "fuzzer", "admin")
    log = tmp / "server.log"
    with running_server(env, free_port(), log) as base:
        yield Live(base, {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {doomed}"}, log)


@pytest.fixture(scope="module")
def raw_schema(live: Live) -> dict[str, Any]:
    schema: dict[str, Any] = httpx.get(live.base + "/schema/openapi.json", timeout=10).json()
    return schema


# A tus PATCH body is raw bytes under tus's own media type.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


def config(live: Live) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "base-url": live.base,
            "cache": {"enabled": False},  # nothing written into the checkout
            "headers": live.headers,
            "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True},
            "phases": {"coverage": {"unexpected-methods": EVERY_METHOD}},
            "operations": [
                {"include-path": ERASE, "headers": live.erase_headers},
                # A cursor is opaque: only one this server issued to this tenant is valid, any other string
                # is 400 invalid_cursor (PROTOCOL.md). No schema can say "issued by this server", so for pull
                # alone a well-formed body may also get that 400; every other check stays as strict.
                {
                    "include-path": "/v1/sync/pull",
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
                },
                # tus 1.0 answers a missing or unsupported Tus-Resumable header with 412 Precondition Failed
                # (tus core), where schemathesis expects a 400-class refusal: 412 is the refusal here.
                {
                    "include-path-regex": "^/v1/attachments/uploads",
                    "checks": {
                        "missing_required_header": {"expected-statuses": ["400", "401", "403", "412", "422"]},
                        "negative_data_rejection": {"expected-statuses": [*REFUSED, "412"]},
                    },
                },
                # A creation's metadata must name the file's id, SHA-256 and media type, and a PATCH's checksum
                # must be base64 of a digest (PROTOCOL.md §10.3): a schema says they are strings of a shape, not
                # that they decode to a valid reference or digest, so a well-formed one may still get 400.
                {
                    "include-path-regex": "^/v1/attachments/uploads",
                    "include-method-regex": "^(POST|PATCH)$",
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}},
                },
            ],
        }
    )


def describe(recorder: Any, case_id: str, failure: Any) -> str:
    """The failure with the request that caused it and the answer, as schemathesis's CLI would show it."""
    interaction = recorder.interactions.get(case_id)
    answer = ""
    if interaction is not None and interaction.response is not None:
        request, response = interaction.request, interaction.response
        answer = f"\n{request.method} {request.uri} -> {response.status_code} {response.content[:300]!r}"
    return f"{recorder.label}: {failure.title}\n{failure.message}{answer}"[:2000]


def test_every_check_passes_on_every_operation_and_method(raw_schema: dict[str, Any], live: Live) -> None:
    schema = schemathesis.openapi.from_dict(raw_schema, config=config(live))
    failures: list[str] = []
    tested: set[str] = set()
    methods: set[str] = set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            tested.add(event.recorder.label)
            methods.update(i.request.method for i in event.recorder.interactions.values())
            for case_id, checks in event.recorder.checks.items():
                failures += [
                    describe(event.recorder, case_id, c.failure_info.failure)
                    for c in checks
                    if c.status == Status.FAILURE and c.failure_info is not None
                ]
        elif isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: {event.info.message}"[:1500])
        elif isinstance(event, events.FatalError):
            raise event.exception
    assert len(tested) >= 20, sorted(tested)
    assert any(ERASE in label for label in tested)
    assert set(EVERY_METHOD) <= methods, methods  # undocumented methods, OPTIONS included, were sent too
    unique = sorted(set(failures))
    assert not unique, "\n\n".join(unique) + "\n\nserver log tail:\n" + live.log.read_text()[-3000:]


def test_push_and_pull_bodies_are_in_the_schema(raw_schema: dict[str, Any]) -> None:
    push = raw_schema["paths"]["/v1/sync/push"]["post"]
    pull = raw_schema["paths"]["/v1/sync/pull"]["post"]
    assert push["requestBody"]["content"]["application/json"]["schema"]["required"] == ["replica", "changes"]
    assert "cursor" in pull["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "results" in push["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    for operation in (push, pull):
        error = operation["responses"]["422"]["content"]["application/json"]["schema"]
        assert "ErrorResponse" in str(error)


def test_metrics_are_documented_as_prometheus_text(raw_schema: dict[str, Any]) -> None:
    content = raw_schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert [media.split(";")[0] for media in content] == ["text/plain"]


def test_parameters_carry_the_constraints_the_server_enforces(raw_schema: dict[str, Any]) -> None:
    def param(path: str, name: str, method: str = "get") -> dict[str, Any]:
        found: dict[str, Any] = next(p for p in raw_schema["paths"][path][method]["parameters"] if p["name"] == name)
        return found

    assert param("/v1/conflicts/{conflict_id}", "conflict_id")["schema"]["pattern"].startswith("^c")
    assert "pattern" in str(param("/v1/conflicts", "after")["schema"])
    assert "pattern" in str(param("/v1/admin/dead-letters", "before")["schema"])
    assert param("/v1/admin/conflicts", "until")["schema"]["format"] == "date-time"
    n = param("/v1/admin/dead-letters/{replica}/{n}", "n")["schema"]
    assert (n["minimum"], n["maximum"]) == (1, 2**53 - 1)
