"""The one way this service opens Redis (job store and key quotas): answers bounded in time, and a connection the
server closed (Redis restarted, an idle timeout) reconnected at once instead of failing one request per pooled
connection."""

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

TIMEOUT_S = 2  # a Redis that does not answer fails a call soon, not at the client's timeout
RECONNECTS = 2  # a stale connection costs one; a Redis that is down fails after these, without waiting long
RECONNECT_PAUSE_S = 0.05


def connect(url: str) -> Redis:
    """A client whose calls fail within about TIMEOUT_S; timeouts are not retried (they already took their time)."""
    return Redis.from_url(
        url,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        retry=Retry(ConstantBackoff(RECONNECT_PAUSE_S), RECONNECTS, supported_errors=(RedisConnectionError,)),
    )
