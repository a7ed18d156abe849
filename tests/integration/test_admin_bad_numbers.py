"""Numbers out of the store's range, typed into the admin web page or the admin CLI: a clear 400, a clean error.

The JSON API refuses them by its parameter types (400 before the handler); the
page and the CLI reach the same services with what was typed, and PostgreSQL
refuses an integer past 64 bits (``NumericValueOutOfRange``: a 500, a
traceback) where SQLite and memory just find nothing. Every backend must answer
the same: 400 ``invalid_request`` naming the parameter.
"""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner, Result

from syncserver.admin.web import TOKEN_COOKIE
from syncserver.cli import main
from syncserver.testing import server_env
from tests.integration.conftest import Server
from tests.integration.test_admin_api import rejected_cod, small_values  # noqa: F401 - a fixture
from tests.integration.test_admin_web import csrf_of

HUGE = "99999999999999999999"
"""Past 64 bits."""

PAGES = [
    f"/admin/conflicts/c{HUGE}.0",
    "/admin/conflicts/c1.99999999999",
    "/admin/conflicts/c1.-1",
    f"/admin/conflicts?after=c{HUGE}.0",
    f"/admin/dead-letters/phone-a/{HUGE}",
    "/admin/dead-letters/phone-a/0",
    f"/admin/dead-letters?before={HUGE}:1:phone-a",
    f"/admin/dead-letters?before=1:{HUGE}:phone-a",
    f"/admin/audit?before={HUGE}",
    "/admin/audit?before=2147483648",
    "/admin/audit?before=0",
    "/admin/audit?before=abc",
    "/admin/audit?before=%D9%A3",  # an Arabic-Indic three: int() takes it, a form field must not
]


@pytest.mark.parametrize("path", PAGES)
async def test_admin_pages_answer_400_to_numbers_out_of_range(server: Server, path: str) -> None:
    tenant = await server.tenant()
    token = server.headers(tenant, "ops", "admin")["Authorization"].split()[1]
    server.client.cookies.set(TOKEN_COOKIE, token)

    r = await server.client.get(path)

    assert r.status_code == 400, r.text[:300]
    assert "text/html" in r.headers["content-type"]
    assert "invalid_request" in r.text


@pytest.mark.parametrize("action", ["replay", "discard"])
async def test_admin_forms_answer_400_to_a_counter_out_of_range(small_values: Server, action: str) -> None:  # noqa: F811
    server = small_values
    tenant = await server.tenant()
    await rejected_cod(server, tenant)
    server.client.cookies.set(TOKEN_COOKIE, server.headers(tenant, "ops", "admin")["Authorization"].split()[1])
    page = await server.client.get("/admin/dead-letters/phone-a/1")
    assert page.status_code == 200, page.text

    r = await server.client.post(
        f"/admin/dead-letters/phone-a/{HUGE}/{action}", data={"_csrf_token": csrf_of(page.text)}
    )

    assert r.status_code == 400, r.text[:300]
    assert "n must be a whole number from 1 to" in r.text
    # The letter itself is untouched.
    assert (await server.client.get("/admin/dead-letters/phone-a/1")).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/admin/conflicts/c{HUGE}.0",
        "/v1/admin/conflicts/c1.99999999999",
        f"/v1/admin/dead-letters/phone-a/{HUGE}",
        f"/v1/admin/audit?before={HUGE}",
        "/v1/admin/audit?before=2147483648",  # audit ids are 32-bit
        f"/v1/admin/entities/deliveries/dlv-1/history?after={HUGE}",
    ],
)
async def test_the_json_api_still_answers_400(server: Server, path: str) -> None:
    tenant = await server.tenant()
    r = await server.client.get(path, headers=server.headers(tenant, "ops", "admin"))
    assert r.status_code == 400, r.text


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> tuple[dict[str, str], str]:
    """A PostgreSQL database (where out-of-range numbers used to raise) with one tenant."""
    env = server_env(tmp_path_factory.mktemp("admin-cli"), pg_url)
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    created = CliRunner().invoke(main, ["tenant", "create", tenant], env=env)
    assert created.exit_code == 0, created.output
    return env, tenant


def admin_cli(env: dict[str, str], tenant: str, *args: str) -> Result:
    return CliRunner().invoke(main, ["admin", "--tenant", tenant, *args], env=env)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["conflicts", "show", f"c{HUGE}.0"], "is not a conflict id"),
        (["conflicts", "show", "c1.99999999999"], "is not a conflict id"),
        (["conflicts", "list", "--after", f"c{HUGE}.0"], "is not a conflict id"),
        (["conflicts", "list", "--limit", HUGE], "--limit"),
        (["conflicts", "list", "--limit", "0"], "--limit"),
        (["conflicts", "override", "c1.0", "--pick", HUGE], "--pick"),
        (["history", "deliveries", "dlv-1", "--after", HUGE], "--after"),
        (["history", "deliveries", "dlv-1", "--limit", HUGE], "--limit"),
        (["dead-letters", "show", "phone-1", HUGE], "'N'"),
        (["dead-letters", "replay", "phone-1", HUGE], "'N'"),
        (["dead-letters", "discard", "phone-1", "0"], "'N'"),
        (["dead-letters", "list", "--before", f"{HUGE}:1:phone-1"], "is not a dead-letter cursor"),
        (["dead-letters", "list", "--limit", HUGE], "--limit"),
        (["audit", "--before", HUGE], "--before"),
        (["audit", "--before", "2147483648"], "--before"),
        (["audit", "--limit", HUGE], "--limit"),
    ],
    ids=lambda a: "-".join(a)[:48] if isinstance(a, list) else "",
)
def test_admin_cli_refuses_numbers_out_of_range_without_a_traceback(
    cli_env: tuple[dict[str, str], str], args: list[str], says: str
) -> None:
    env, tenant = cli_env
    result = admin_cli(env, tenant, *args)
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # a clean error, not an exception
    assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert says in result.output


def test_admin_cli_still_works_in_range(cli_env: tuple[dict[str, str], str]) -> None:
    env, tenant = cli_env
    for args in (["audit", "--before", "2147483647"], ["dead-letters", "list", "--limit", "500"]):
        result = admin_cli(env, tenant, "--json", *args)
        assert result.exit_code == 0, result.output
    missing = admin_cli(env, tenant, "dead-letters", "show", "phone-1", "9007199254740991")
    assert missing.exit_code == 1
    assert "not_found" in missing.output
