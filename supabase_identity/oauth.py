"""What the auth service calls in its Shopify OAuth callback.

One call does the identity work of storing a merchant's token: get-or-create the user, log
``oauth_complete`` with ``first_time``, write ``user_id`` into ``merchant:<shop_domain>`` so the
archiver can link that shop's conversations, optionally attach the user to the conversation in
progress, and return the parameters of the redirect back to the chat::

    result = complete_oauth(shop, redis_client=redis_client, email=info.get("email"))
    return RedirectResponse(result.redirect_url(settings.frontend_url), status_code=302)

The async twin, :func:`acomplete_oauth`, takes an :class:`AsyncIdentityClient` and a
``redis.asyncio`` client. ``log_user_event`` never raises for a backend outage (the event waits
in the outbox), so a slow analytics path cannot break a merchant's login.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ._async._live import remember_merchant, set_conversation_user
from ._client import AsyncIdentityClient, IdentityClient
from ._constants import (
    MAX_EMAIL_LENGTH,
    MAX_MERCHANT_ID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SHOPIFY_ID_LENGTH,
)
from ._redis import AsyncRedisClient, RedisClient
from ._validation import (
    normalize_shop_domain,
    validate_conversation_id,
    validate_optional_text,
    validate_text,
)
from .archive._layout import DEFAULT_CONVERSATION_TTL, ConversationStore

__all__ = ["OAuthResult", "acomplete_oauth", "complete_oauth", "merchant_id_for"]

#: How long a user's index of live conversations lasts, as ``ConversationStore`` keeps it.
_CONVERSATION_TTL_SECONDS = int(DEFAULT_CONVERSATION_TTL.total_seconds())

OAUTH_EVENT = "oauth_complete"


def merchant_id_for(shop_domain: str) -> str:
    """The agents service's merchant id for a shop: ``merchant_<name>``."""
    return "merchant_" + normalize_shop_domain(shop_domain).removesuffix(".myshopify.com")


@dataclass(frozen=True)
class OAuthResult:
    """The ids an OAuth completion produced, and the redirect the callback answers with."""

    user_id: str
    is_new: bool
    merchant_id: str
    shop_domain: str

    @property
    def redirect_params(self) -> dict[str, str]:
        """``oauth``, ``is_new``, ``merchant_id``, ``user_id``, ``shop`` (what the chat reads)."""
        return {
            "oauth": "complete",
            "is_new": "true" if self.is_new else "false",
            "merchant_id": self.merchant_id,
            "user_id": self.user_id,
            "shop": self.shop_domain,
        }

    def redirect_url(self, frontend_url: str, path: str = "/chat") -> str:
        """``<frontend_url><path>?oauth=complete&…`` for the callback's 302."""
        return f"{frontend_url.rstrip('/')}{path}?{urlencode(self.redirect_params)}"


def _event_data(shop: str, is_new: bool) -> dict[str, Any]:
    return {"shop": shop, "first_time": is_new}


def _check_arguments(
    email: str | None,
    name: str | None,
    shopify_id: str | None,
    merchant_id: str | None,
    conversation_id: str | None,
) -> None:
    """Refuse bad arguments before the first side effect (the user, the event, Redis)."""
    validate_optional_text(email, field="email", max_length=MAX_EMAIL_LENGTH)
    validate_optional_text(name, field="name", max_length=MAX_NAME_LENGTH)
    validate_optional_text(shopify_id, field="shopify_id", max_length=MAX_SHOPIFY_ID_LENGTH)
    if merchant_id is not None:
        validate_text(merchant_id, field="merchant_id", max_length=MAX_MERCHANT_ID_LENGTH)
    if conversation_id is not None:
        validate_conversation_id(conversation_id)


def complete_oauth(
    shop_domain: str,
    *,
    redis_client: RedisClient,
    client: IdentityClient | None = None,
    email: str | None = None,
    name: str | None = None,
    shopify_id: str | None = None,
    merchant_id: str | None = None,
    conversation_id: str | None = None,
) -> OAuthResult:
    """Identity work of a Shopify OAuth callback; see the module docstring.

    ``client`` defaults to the package's default client (service key from the environment).
    ``conversation_id``, when the login happened inside a chat, gets ``user_id``/``merchant_id``
    on its Redis session so the archiver links it without a merchant lookup.

    Raises:
        ValidationError: ``shop_domain`` is not ``<name>.myshopify.com``, or another argument
            breaks its rule (checked before anything is written).
    """
    shop = normalize_shop_domain(shop_domain)
    _check_arguments(email, name, shopify_id, merchant_id, conversation_id)
    if client is None:
        from ._default import get_default_client

        client = get_default_client()
    merchant = merchant_id or merchant_id_for(shop)
    user_id, is_new = client.get_or_create_user(shop, email=email, name=name, shopify_id=shopify_id)
    client.log_user_event(user_id, OAUTH_EVENT, _event_data(shop, is_new))
    store = ConversationStore(redis_client)
    store.remember_merchant(shop, user_id, merchant_id=merchant)
    if conversation_id is not None:
        store.set_user(conversation_id, user_id, merchant_id=merchant)
    return OAuthResult(user_id=user_id, is_new=is_new, merchant_id=merchant, shop_domain=shop)


async def acomplete_oauth(
    shop_domain: str,
    *,
    redis_client: AsyncRedisClient,
    client: AsyncIdentityClient,
    email: str | None = None,
    name: str | None = None,
    shopify_id: str | None = None,
    merchant_id: str | None = None,
    conversation_id: str | None = None,
) -> OAuthResult:
    """:func:`complete_oauth` for async services; never blocks the event loop."""
    shop = normalize_shop_domain(shop_domain)
    _check_arguments(email, name, shopify_id, merchant_id, conversation_id)
    merchant = merchant_id or merchant_id_for(shop)
    user_id, is_new = await client.get_or_create_user(
        shop, email=email, name=name, shopify_id=shopify_id
    )
    await client.log_user_event(user_id, OAUTH_EVENT, _event_data(shop, is_new))
    await remember_merchant(redis_client, shop, user_id, merchant)
    if conversation_id is not None:
        await set_conversation_user(
            redis_client, conversation_id, user_id, merchant, _CONVERSATION_TTL_SECONDS
        )
    return OAuthResult(user_id=user_id, is_new=is_new, merchant_id=merchant, shop_domain=shop)
