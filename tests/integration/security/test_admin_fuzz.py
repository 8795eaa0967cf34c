"""The admin API fuzzed against its own OpenAPI document (schemathesis), over a real socket.

Schemathesis reads /openapi.json from the running server and generates requests for every
operation: valid ones (positive) and ones that break the schema (negative: wrong types, values
out of range, missing fields, no token). Half of the cases aim at the seeded service, so they
reach pods and users rather than only 404s. After each successful mutation Redis is reset to
the seeded state, so a delete does not starve the cases after it.

Checks on every answer: no 5xx, a status the document lists, the content type and body schema
it declares, invalid input refused with a 4xx, and (once per operation) that a mutation fails
without the token or with a wrong one. Schemathesis leaves /openapi.json itself out; its test
is that it loads.

The first run is made over plain HTTP and over HTTPS (``admin.tls``), the same checks.

A second run is schemathesis' own CLI with every check (``--checks all``) and every phase
(examples, coverage, fuzzing, stateful): ~1,800 cases, ~10 s, a fixed seed.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis import APIOperation, Case, GenerationMode

from controlplane.admin.routes import OPERATIONS
from tests.integration.security.conftest import (
    AUTH,
    BOUND_USERS,
    NAMESPACE,
    SERVICE,
    AdminServer,
    seed,
)

# Cases per operation and generation mode; 20 operations, ~700 cases, ~15 s.
MAX_EXAMPLES = 25
# Over HTTPS the same checks with fewer cases: what TLS adds is the transport, not the inputs.
MAX_EXAMPLES_TLS = 8
KNOWN = {"namespace": NAMESPACE, "service": SERVICE, "uid": BOUND_USERS[0]}


def checks() -> list[Any]:
    c = schemathesis.checks
    return [
        c.not_a_server_error,
        c.status_code_conformance,
        c.content_type_conformance,
        c.response_schema_conformance,
        c.negative_data_rejection,
        c.ignored_auth,
    ]


def fuzz_operation(
    operation: APIOperation,
    base_url: str,
    session: requests.Session,
    reset: Callable[[], None],
    max_examples: int,
) -> int:
    """Send this operation's cases, in both modes; how many were sent."""
    sent = 0
    names = {p.name for p in operation.path_parameters}
    has_input = bool(names or list(operation.iter_parameters()) or operation.body)
    # Without parameters or a body there is nothing to make invalid.
    modes = [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if has_input else [])]
    for mode in modes:
        strategies = [operation.as_strategy(generation_mode=mode)]
        if "namespace" in names:
            known = {name: value for name, value in KNOWN.items() if name in names}
            strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=known))

        @hypothesis.settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[hypothesis.Phase.generate, hypothesis.Phase.shrink],
        )
        @given(case=st.one_of(strategies))
        def run(case: Case) -> None:
            nonlocal sent
            response = case.call(
                base_url=base_url, session=session, headers=AUTH, timeout=10, verify=session.verify
            )
            sent += 1
            case.validate_response(
                response,
                checks=checks(),
                headers=AUTH,
                transport_kwargs={"verify": session.verify},  # for its own probes
            )
            if case.method.upper() != "GET" and response.status_code < 300:
                reset()

        run()
    return sent


def fuzz(
    base_url: str, reset: Callable[[], None], verify: str | bool, max_examples: int
) -> Counter[str]:
    """Every operation's cases; the number sent, by operation."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", verify=verify)
    sent: Counter[str] = Counter()
    with requests.Session() as session:
        session.verify = verify
        for result in schema.get_all_operations():
            operation = result.ok()
            sent[operation.label] = fuzz_operation(
                operation, base_url, session, reset, max_examples
            )
    return sent


async def test_the_admin_api_survives_fuzzing_against_its_own_openapi_document(
    plain_or_tls_admin_server: AdminServer, redis: Redis
) -> None:
    admin_server = plain_or_tls_admin_server
    loop = asyncio.get_running_loop()

    async def reseed() -> None:
        await redis.flushdb()
        await seed(admin_server.manager)

    def reset() -> None:  # called from the fuzzing thread
        asyncio.run_coroutine_threadsafe(reseed(), loop).result(timeout=10)

    # requests is blocking: fuzz in a thread while this loop serves the app and Redis.
    tls = admin_server.url.startswith("https:")
    examples = MAX_EXAMPLES_TLS if tls else MAX_EXAMPLES
    sent = await asyncio.to_thread(fuzz, admin_server.url, reset, admin_server.verify, examples)

    version = schemathesis.SCHEMATHESIS_VERSION
    print(f"\nschemathesis {version}: {sum(sent.values())} cases over {len(sent)} operations")
    expected = {f"{op.method} {op.path}" for op in OPERATIONS} - {"GET /openapi.json"}
    assert set(sent) == expected
    assert all(count >= 1 for count in sent.values())
    assert sum(sent.values()) >= 20 * examples


# The CLI's own run: every check and every phase (examples, coverage, fuzzing, stateful links).
CLI_MAX_EXAMPLES = 25
# Over HTTPS the same checks with fewer cases: what TLS adds is the transport, not the inputs.
MAX_EXAMPLES_TLS = 8


async def test_schemathesis_with_every_check_and_phase_finds_nothing(
    admin_server: AdminServer, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{admin_server.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(CLI_MAX_EXAMPLES),
        "--seed",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-color",
        "--header",
        f"Authorization: {AUTH['Authorization']}",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )  # in tmp_path: the CLI writes its .schemathesis/ state to the working directory
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    print(report[-3000:])
    assert process.returncode == 0, report[-6000:]
