"""Whether what Redis acknowledged is in its append-only file, for tests that kill -9 it."""

from __future__ import annotations

from redis.asyncio import Redis


async def written_to_aof(url: str) -> bool:
    """Nothing left in the AOF buffer nor waiting for a background fsync.

    A SIGKILLed redis-server loses only what it had not written to the file yet (the kernel
    keeps the rest), so this, not a second of ``appendfsync everysec``, is what such a test
    needs; a busy machine can hold the fsync back past that second.
    """
    client = Redis.from_url(url)
    try:
        info = await client.info("persistence")
    finally:
        await client.aclose()
    return info.get("aof_buffer_length") == 0 and info.get("aof_pending_bio_fsync") == 0
