"""Submission rate limits shared by every gateway replica.

A token bucket kept in one process lets a caller who reaches N gateways (a
Kubernetes Service spreads connections over them) submit N times the burst and
N times the rate. With NATS configured, each caller's bucket lives in the
JetStream key-value bucket `alphaswarm_rate_limits` instead, one key per
caller (the sha256 of the subject, never the subject itself), and every take
is a compare-and-set on the key's revision: two gateways taking from the same
bucket at once cannot both spend the last token. A key idle for a day expires,
which is the same as a full bucket.
Without NATS (the embedded stack: one gateway) the in-process buckets of
`auth.py` are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from typing import Any

from alphaswarm_common.errors import DependencyUnavailable

__all__ = ["KV_BUCKET", "SharedBuckets"]

KV_BUCKET = "alphaswarm_rate_limits"
# A key idle this long is dropped: its bucket has long been full again (the same as no key).
KEY_TTL_SECONDS = 24 * 3600.0
CONNECT_TIMEOUT_SECONDS = 5.0


class SharedBuckets:
    """Token buckets per subject in a JetStream key-value bucket: `burst` submissions at once,
    refilled at `rate_per_minute`; the same buckets for every gateway on the same NATS."""

    def __init__(
        self, url: str, rate_per_minute: float, burst: int, *, bucket: str = KV_BUCKET, attempts: int = 50
    ) -> None:
        self.url = url
        self.rate = rate_per_minute / 60.0
        self.burst = float(burst)
        self.bucket = bucket
        self.attempts = attempts
        self._nc: Any = None
        self._kv: Any = None
        self._lock = asyncio.Lock()

    async def _store(self) -> Any:
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                import nats

                # The connection reconnects by itself once made; the first one must not hang.
                self._nc = await asyncio.wait_for(
                    nats.connect(self.url, name="alphaswarm-rate-limits", max_reconnect_attempts=-1),
                    timeout=CONNECT_TIMEOUT_SECONDS,
                )
                self._kv = None
            if self._kv is None:
                from nats.js.api import KeyValueConfig, StorageType

                js = self._nc.jetstream()
                try:
                    self._kv = await js.key_value(self.bucket)
                except Exception:
                    self._kv = await js.create_key_value(
                        KeyValueConfig(
                            bucket=self.bucket, history=1, ttl=KEY_TTL_SECONDS, storage=StorageType.FILE
                        )
                    )
            return self._kv

    async def take(self, subject: str) -> float:
        """0 when a submission may go ahead (and is counted), else the seconds to wait."""
        from nats.js.errors import KeyNotFoundError, KeyValueError, KeyWrongLastSequenceError

        try:
            kv = await self._store()
            key = hashlib.sha256(subject.encode()).hexdigest()[:40]
            for _ in range(self.attempts):
                now = time.time()
                revision = None
                tokens, last = self.burst, now
                try:
                    entry = await kv.get(key)
                    if entry.value:
                        state = json.loads(entry.value)
                        tokens, last = float(state["tokens"]), float(state["at"])
                    revision = entry.revision
                except KeyNotFoundError:
                    pass
                tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
                wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
                if wait > 0:
                    return wait  # nothing spent: no write needed
                value = json.dumps({"tokens": tokens - 1.0, "at": now}).encode()
                try:
                    if revision is None:
                        await kv.create(key, value)
                    else:
                        await kv.update(key, value, last=revision)
                    return 0.0
                except (KeyWrongLastSequenceError, KeyValueError):
                    continue  # another gateway took from this bucket first: read again
        except (OSError, TimeoutError) as exc:
            self._kv = None  # bind (or make) the bucket again next time: NATS may come back empty
            raise DependencyUnavailable(f"rate limits unavailable (NATS): {exc}") from None
        except Exception as exc:
            if type(exc).__module__.startswith("nats"):
                self._kv = None
                raise DependencyUnavailable(f"rate limits unavailable (NATS): {exc}") from None
            raise
        raise DependencyUnavailable("rate limits contended: retry")

    async def close(self) -> None:
        nc, self._nc, self._kv = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()
