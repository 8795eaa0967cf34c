"""Every byte string Redis holds: key names, and each value, field and member under them."""

from __future__ import annotations

from redis.asyncio import Redis


async def contents(url: str) -> list[bytes]:
    """Everything in the Redis at ``url``, read as bytes so nothing is lost to decoding."""
    redis = Redis.from_url(url, decode_responses=False)
    try:
        return await _everything_in(redis)
    finally:
        await redis.aclose()


async def _everything_in(redis: Redis) -> list[bytes]:
    found: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        found.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            found.append(await redis.get(key))
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                found += [field, value]
        elif kind == "set":
            found += list(await redis.smembers(key))
        elif kind == "list":
            found += await redis.lrange(key, 0, -1)
        elif kind == "zset":
            found += [member for member, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, entry in await redis.xrange(key):
                for field, value in entry.items():
                    found += [field, value]
    return found


async def redis_holds(url: str, needles: list[bytes]) -> list[bytes]:
    """The ``needles`` found anywhere in the Redis at ``url`` (as part of a key, value, field
    or member)."""
    haystack = await contents(url)
    return [n for n in needles if any(n in item for item in haystack)]
