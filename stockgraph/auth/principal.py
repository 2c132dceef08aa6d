"""The authenticated caller of one request."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from stockgraph.auth.scopes import Scope
from stockgraph.domain.ids import TenantId


class CredentialKind(Enum):
    TOKEN = "token"  # noqa: S105 - a kind of credential, not a secret
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: one tenant, a subject (client or key id) and the scopes it holds.

    A principal sees nothing of any other tenant, whatever it asks.
    """

    tenant_id: TenantId
    subject: str
    scopes: frozenset[Scope]
    kind: CredentialKind = CredentialKind.TOKEN

    def can(self, scope: Scope) -> bool:
        return scope in self.scopes

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.kind.value}:{self.subject}"
