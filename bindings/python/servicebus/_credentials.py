"""Credentials: shared access keys, and any ``get_token(*scopes)`` object."""

import time
from typing import Any, NamedTuple

from . import _sbus

__all__ = ["AccessToken", "ServiceBusSharedKeyCredential", "ServiceBusSasCredential"]

#: The scope asked of token credentials (Azure AD), as azure-servicebus does.
JWT_TOKEN_SCOPE = "https://servicebus.azure.net//.default"


class AccessToken(NamedTuple):
    """A token and its expiry (Unix seconds), as ``get_token`` returns."""

    token: str
    expires_on: int


class ServiceBusSharedKeyCredential:
    """The shared access key of a policy (e.g. RootManageSharedAccessKey).

    The engine signs and refreshes SAS tokens itself when a client uses this
    credential; ``get_token`` is there for callers who want a token.

    :param str policy: The name of the shared access policy.
    :param str key: The shared access key.
    """

    def __init__(self, policy: str, key: str) -> None:
        self.policy = policy
        self.key = key
        self.token_type = b"servicebus.windows.net:sastoken"

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """A SAS token for ``scopes[0]`` (the resource URI), valid one hour.

        :rtype: AccessToken
        """
        if not scopes:
            raise ValueError("No token scope provided.")
        expiry = int(time.time()) + int(kwargs.get("expiry", 3600))
        return AccessToken(_sbus.sas_token(scopes[0], self.policy, self.key, expiry), expiry)

    def __repr__(self) -> str:
        return "ServiceBusSharedKeyCredential(policy=%r, key=<hidden>)" % (self.policy,)


class ServiceBusSasCredential:
    """A ready shared access signature (``SharedAccessSignature sr=...``).

    :param str signature: The signature, used as is.
    """

    def __init__(self, signature: str) -> None:
        self.signature = signature

    def __repr__(self) -> str:
        return "ServiceBusSasCredential(signature=<hidden>)"
