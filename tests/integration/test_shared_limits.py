"""Submission rate limits are shared by every gateway on the same NATS: a caller cannot get N times
the burst by spreading submissions over N gateways, even when they take at the same instant."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from alphaswarm_gateway.shared_limits import SharedBuckets
from tests.integration.topology import require_nats

pytestmark = pytest.mark.integration
NATS_URL = os.environ.get("ALPHASWARM_TEST_NATS_URL", "nats://127.0.0.1:4222")


async def _drop(bucket: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_key_value(bucket)
    finally:
        await nc.close()


def test_two_gateways_share_one_bucket_per_caller() -> None:
    require_nats(NATS_URL)
    bucket = f"alphaswarm_rate_limits_test_{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        a = SharedBuckets(NATS_URL, rate_per_minute=6.0, burst=5, bucket=bucket)
        b = SharedBuckets(NATS_URL, rate_per_minute=6.0, burst=5, bucket=bucket)
        try:
            # 12 submissions of one caller at once, spread over both gateways: exactly the burst passes.
            waits = await asyncio.gather(*[(a if i % 2 else b).take("alice") for i in range(12)])
            assert sum(1 for w in waits if w == 0) == 5
            refused = [w for w in waits if w > 0]
            assert len(refused) == 7 and all(0 < w <= 10.0 for w in refused)
            # Another caller has a bucket of its own, on either gateway.
            assert await a.take("bob") == 0 and await b.take("bob") == 0
        finally:
            await a.close()
            await b.close()
            await _drop(bucket)

    asyncio.run(scenario())


def test_an_in_process_bucket_per_gateway_would_not_hold() -> None:
    """For contrast: the per-process buckets give two gateways twice the burst."""
    from alphaswarm_gateway.auth import _Buckets

    first, second = _Buckets(6.0, 5), _Buckets(6.0, 5)
    passed = sum(1 for i in range(12) if (first if i % 2 else second).take("alice") == 0)
    assert passed == 10


def test_nats_unreachable_is_unavailable_not_a_hang() -> None:
    from alphaswarm_common.errors import DependencyUnavailable
    from tests.integration.topology import free_port

    async def scenario() -> None:
        buckets = SharedBuckets(f"nats://127.0.0.1:{free_port()}", rate_per_minute=6.0, burst=5)
        try:
            with pytest.raises(DependencyUnavailable):
                await asyncio.wait_for(buckets.take("alice"), timeout=30)
        finally:
            await buckets.close()

    asyncio.run(scenario())


def test_a_bucket_lost_with_the_nats_store_is_made_again() -> None:
    require_nats(NATS_URL)
    bucket = f"alphaswarm_rate_limits_test_{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        from alphaswarm_common.errors import DependencyUnavailable

        buckets = SharedBuckets(NATS_URL, rate_per_minute=6.0, burst=5, bucket=bucket)
        try:
            assert await buckets.take("alice") == 0
            await _drop(bucket)  # e.g. NATS restarted on an empty store
            waits = []
            for _ in range(2):
                try:
                    waits.append(await buckets.take("alice"))
                except DependencyUnavailable:
                    waits.append(-1.0)
            assert 0.0 in waits, waits
        finally:
            await buckets.close()
            await _drop(bucket)

    asyncio.run(scenario())
