"""Notifications to an organisation's webhook: signed POSTs.

Headers: ``X-Sensord-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``,
``X-Sensord-Timestamp`` (unix seconds; receivers reject stale ones to stop
replays) and ``Idempotency-Key`` (the message id; the same on every retry).
A 2xx is delivered; anything else is retried by the relay with backoff.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

from sensord.config import WebhookConfig
from sensord.errors import SensordError


class WebhookFailed(SensordError):
    """The receiver did not accept the notification."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The value of ``X-Sensord-Signature`` for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class WebhookSender:
    """POSTs to the configured webhooks over one connection pool."""

    def __init__(self, webhooks: dict[str, WebhookConfig]) -> None:
        self._webhooks = webhooks
        self._client = httpx.AsyncClient(follow_redirects=False)

    @property
    def longest_timeout_s(self) -> float:
        """The longest request timeout of any webhook (0 without webhooks)."""
        return max((hook.timeout_s for hook in self._webhooks.values()), default=0.0)

    async def send(self, org_id: str, key: str, body: bytes, timestamp: int) -> None:
        """Deliver one message; raise WebhookFailed with the reason."""
        hook = self._webhooks.get(org_id)
        if hook is None:
            raise WebhookFailed(f"no webhook configured for {org_id}")
        stamp = str(timestamp)
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Sensord-Timestamp": stamp,
            "X-Sensord-Signature": signature(hook.secret.get_secret_value().encode(), stamp, body),
        }
        try:
            response = await self._client.post(
                str(hook.url), content=body, headers=headers, timeout=hook.timeout_s
            )
        except httpx.HTTPError as exc:
            raise WebhookFailed(f"{type(exc).__name__}: {exc}") from None
        if not response.is_success:
            raise WebhookFailed(f"HTTP {response.status_code}")

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
