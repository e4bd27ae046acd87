"""Role checks, made in the database at the moment of use: nothing cached."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.users import UserRepository

COORDINATING = ("admin", "coordinator")


class NotAllowed(PermissionError):
    """The person lacks the role the action needs."""


async def require_role(
    conn: AsyncConnection, users: UserRepository, pseudonym: str, roles: Sequence[str]
) -> str:
    """Return the pseudonym if the person holds one of `roles`, else raise NotAllowed."""
    user = await users.get(conn, pseudonym)
    if user is None or not user.roles.intersection(roles):
        raise NotAllowed(pseudonym)
    return pseudonym
