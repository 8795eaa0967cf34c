"""Everything a Redis holds, for tests: to show a refused call wrote nothing, or that a secret
never reached Redis."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis


async def redis_dump(redis: Redis) -> dict[Any, Any]:
    """Every key with its value: a string's value, a hash's fields, a set's members, a list's
    items, a sorted set's (member, score) pairs, a stream's (id, entry) pairs."""
    readers = {
        "string": redis.get,
        "hash": redis.hgetall,
        "set": redis.smembers,
        "list": lambda key: redis.lrange(key, 0, -1),
        "zset": lambda key: redis.zrange(key, 0, -1, withscores=True),
        "stream": redis.xrange,
    }
    dump: dict[Any, Any] = {}
    async for key in redis.scan_iter(count=1000):
        kind = await redis.type(key)
        dump[key] = await readers[kind.decode() if isinstance(kind, bytes) else kind](key)
    return dict(sorted(dump.items()))


def every_item(dump: dict[Any, Any]) -> list[Any]:
    """Key names, and each value, field and member under them (scores and stream ids left out)."""
    found: list[Any] = []
    for key, value in dump.items():
        found.append(key)
        if isinstance(value, dict):
            for field, item in value.items():
                found += [field, item]
        elif isinstance(value, set):
            found += list(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, tuple) and isinstance(item[1], dict):  # stream entry
                    for field, part in item[1].items():
                        found += [field, part]
                elif isinstance(item, tuple):  # sorted set (member, score)
                    found.append(item[0])
                else:
                    found.append(item)
        elif value is not None:
            found.append(value)
    return found


async def contents(url: str) -> list[bytes]:
    """Everything in the Redis at ``url``, read as bytes so nothing is lost to decoding."""
    redis = Redis.from_url(url, decode_responses=False)
    try:
        return every_item(await redis_dump(redis))
    finally:
        await redis.aclose()


async def redis_holds(url: str, needles: list[bytes]) -> list[bytes]:
    """The ``needles`` found anywhere in the Redis at ``url`` (as part of a key, value, field
    or member)."""
    haystack = await contents(url)
    return [n for n in needles if any(n in item for item in haystack)]
