"""``minions-gw keys create|list|update|revoke``: API keys, straight in the gateway's store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from cli.common import console, fail, load_settings, run_async
from service.store import Store
from service.store.api_keys import NANO

T = TypeVar("T")


class PrivacyChoice(StrEnum):
    off = "off"
    pseudonymize = "pseudonymize"


class PrivacyUpdate(StrEnum):
    off = "off"
    pseudonymize = "pseudonymize"
    default = "default"  # the gateway's (MGW_PRIVACY_DEFAULT)


app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


def _with_store(action: Callable[[Store], Awaitable[T]]) -> T:
    settings = load_settings()

    async def go() -> T:
        store = Store.connect(
            settings.redis_url,
            settings.data_dir,
            sentinels=settings.sentinel_addresses(),
            sentinel_master=settings.redis_sentinel_master,
        )
        try:
            return await action(store)
        finally:
            await store.aclose()

    return run_async(go())


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="a label for the key")],
    admin: Annotated[bool, typer.Option("--admin", help="may manage keys and see usage")] = False,
    budget_usd: Annotated[
        float | None, typer.Option(min=0, help="most remote USD the key may spend")
    ] = None,
    rate_limit: Annotated[
        int | None, typer.Option(min=1, help="requests a minute (default MGW_RATE_LIMIT...)")
    ] = None,
    privacy: Annotated[
        PrivacyChoice | None,
        typer.Option(help="privacy mode of the key's tasks that do not choose one"),
    ] = None,
) -> None:
    """Create a key and print its secret (shown once)."""
    limit = rate_limit or load_settings().rate_limit_per_minute
    key, token = _with_store(
        lambda store: store.api_keys.create(
            name,
            admin=admin,
            budget_usd=budget_usd,
            rate_limit_per_minute=limit,
            privacy=privacy.value if privacy else None,
        )
    )
    privacy_note = f", privacy {key.privacy} by default" if key.privacy else ""
    console.print(f"created key [bold]{key.id}[/] ({name}{privacy_note}); its secret, shown once:")
    console.print(token, highlight=False, markup=False, soft_wrap=True)


@app.command("list")
def list_keys() -> None:
    """List keys with their budgets and spend (never their secrets)."""
    keys = _with_store(lambda store: store.api_keys.list())
    table = Table(title="API keys")
    for column in ("id", "name", "admin", "budget USD", "spent USD", "reserved USD", "req/min"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            key.id,
            key.name,
            "yes" if key.admin else "",
            "" if key.budget_usd is None else f"{key.budget_usd:.4f}",
            f"{key.spent_nano / NANO:.6f}",
            f"{key.reserved_nano / NANO:.6f}",
            str(key.rate_limit_per_minute),
        )
    console.print(table)
    # Below the table, not in it: one more column squeezes the ids in an 80-column pipe.
    for key in keys:
        if key.privacy:
            console.print(f"key {key.id}: privacy {key.privacy} by default", highlight=False)


@app.command("update")
def update(
    key_id: Annotated[str, typer.Argument(help="the key's id")],
    privacy: Annotated[
        PrivacyUpdate,
        typer.Option(
            help="privacy mode of the key's tasks that do not choose one; "
            "default: the gateway's (MGW_PRIVACY_DEFAULT)"
        ),
    ],
) -> None:
    """Change a key's privacy default."""
    wanted = None if privacy is PrivacyUpdate.default else privacy.value
    key = _with_store(lambda store: store.api_keys.set_privacy(key_id, wanted))
    if key is None:
        fail(f"no key {key_id!r}")
    console.print(f"key {key_id}: privacy {key.privacy or 'the gateway default'}")


@app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the key's id")]) -> None:
    """Revoke a key at once."""
    if not _with_store(lambda store: store.api_keys.revoke(key_id)):
        fail(f"no key {key_id!r}")
    console.print(f"revoked {key_id}")
