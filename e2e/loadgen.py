"""An open-loop load generator: requests arrive at a set rate whatever the servers' latency.

Real traffic does not slow down because one revision is slow, so arrivals are scheduled by the
clock (not by free workers): a slow canary gets its share of requests and piles up in-flight,
which is what its latency histogram and queue gauge must show. One thread runs an asyncio loop
with one aiohttp session: cheap enough for a 2-core machine at tens of requests per second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

log = logging.getLogger("e2e.loadgen")

# A request that failed before any HTTP status (refused, reset, timed out) is counted as code 0.
NO_RESPONSE = 0


@dataclass(frozen=True)
class Target:
    """Where one request goes: the revision is what the counters are keyed by."""

    revision: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


# Returns the next request's target, or a string saying why there is none (counted as skipped).
Picker = Callable[[], Target | str]


class LoadGenerator:
    def __init__(
        self,
        pick: Picker,
        rps: float,
        *,
        max_inflight: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        self._pick = pick
        self._rps = rps
        self._max_inflight = max_inflight
        self._timeout_s = timeout_s
        self._paused = False
        self._stopping = False
        self._lock = threading.Lock()
        self._sent: Counter[str] = Counter()
        self._codes: dict[str, Counter[int]] = {}
        self._skipped: Counter[str] = Counter()
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- control -------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="loadgen", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("load generator did not stop within %.0fs", timeout)
            self._thread = None

    def set_rate(self, rps: float) -> None:
        if rps < 0:
            raise ValueError(f"rate must be >= 0, got {rps}")
        self._rps = rps

    @property
    def rate(self) -> float:
        return self._rps

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    # --- counters ------------------------------------------------------------------------------

    def sent_by_revision(self) -> Counter[str]:
        with self._lock:
            return Counter(self._sent)

    def codes_by_revision(self) -> dict[str, Counter[int]]:
        """Responses per revision and HTTP status (0: no response at all)."""
        with self._lock:
            return {r: Counter(c) for r, c in self._codes.items()}

    def skipped(self) -> Counter[str]:
        """Requests due that were not sent, by reason."""
        with self._lock:
            return Counter(self._skipped)

    def inflight(self) -> int:
        return self._inflight

    # --- the loop ------------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception:  # never silently: a dead load generator makes every verdict Inconclusive
            log.exception("load generator crashed")
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = aiohttp.ClientTimeout(total=self._timeout_s)
        connector = aiohttp.TCPConnector(limit=self._max_inflight)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            due = loop.time()
            while not self._stopping:
                now = loop.time()
                rps = self._rps
                if self._paused or rps <= 0:
                    due = now
                    await asyncio.sleep(0.05)
                    continue
                if due > now:
                    await asyncio.sleep(min(due - now, 0.1))
                    continue
                # Behind schedule (a stall of this thread): catch up at most one second's worth.
                due = max(due + 1.0 / rps, now - 1.0)
                self._dispatch(session, tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self, session: aiohttp.ClientSession, tasks: set[asyncio.Task[None]]) -> None:
        try:
            target = self._pick()
        except Exception as e:  # a bug in the picker must show, not kill the traffic
            log.exception("picking a target failed")
            target = f"pick error: {type(e).__name__}"
        if isinstance(target, str):
            with self._lock:
                self._skipped[target] += 1
            return
        if self._inflight >= self._max_inflight:
            with self._lock:
                self._skipped["max in-flight reached"] += 1
            return
        with self._lock:
            self._sent[target.revision] += 1
        self._inflight += 1
        task = asyncio.create_task(self._send(session, target))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _send(self, session: aiohttp.ClientSession, target: Target) -> None:
        code = NO_RESPONSE
        try:
            async with session.post(
                target.url,
                data=target.body,
                headers={"Content-Type": "application/json", **target.headers},
            ) as r:
                await r.read()
                code = r.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            log.debug("request to %s failed: %r", target.url, e)
        finally:
            self._inflight -= 1
            with self._lock:
                self._codes.setdefault(target.revision, Counter())[code] += 1
