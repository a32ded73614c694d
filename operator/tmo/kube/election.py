"""Leader election on a Lease (the I/O; the rules are in tmo.kube.leader).

`tmo operator --leader-elect`: a process waits as a standby until it holds the Lease, then runs
the operator while renewing it. If it cannot renew within the renew deadline it exits at once
(exit code 1, so Kubernetes restarts it as a standby): by then it has stopped writing, and a
standby may take the Lease only after the full lease duration. A clean shutdown (SIGTERM) gives
the Lease back, so the standby takes over without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from tmo.kube import leader, metrics
from tmo.kube.client import ApiError, KubeClient

log = logging.getLogger("tmo.election")

IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def default_identity() -> str:
    # The pod name (hostname) says which replica leads; the suffix tells restarts apart.
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(IN_CLUSTER_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


class LostLeadership(RuntimeError):
    pass


class Elector:
    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        timing: leader.LeaseTiming,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timing = timing
        self.clock = clock
        self._renewed_at = 0.0  # monotonic time of the last successful write

    async def _try(self) -> tuple[bool, str]:
        """One attempt to create, take or renew the Lease: (whether this process holds it, the
        holder it read)."""
        obj = await self.client.get(leader.LEASE_API, "Lease", self.namespace, self.name)
        lease = leader.parse_lease(obj)
        holder = lease.holder if lease else ""
        now = self.clock()
        step = leader.next_step(lease, self.identity, now)
        if step == "wait":
            return False, holder
        body = leader.lease_object(
            self.namespace, self.name, self.identity, now, self.timing, lease
        )
        try:
            if step == "create":
                await self.client.create(body)
            else:
                await self.client.replace(body)
        except ApiError as e:
            if e.status == 409:  # another process wrote first: read again next round
                return False, holder
            raise
        self._renewed_at = asyncio.get_running_loop().time()
        if step != "renew":
            log.info(
                "leader election: %s now holds Lease %s/%s%s",
                self.identity,
                self.namespace,
                self.name,
                f" (was {lease.holder or 'released'})" if lease else "",
            )
        return True, self.identity

    async def acquire(self) -> None:
        last_holder: str | None = None
        while True:
            try:
                held, holder = await self._try()
                if held:
                    return
                if holder != last_holder:
                    log.info(
                        "leader election: standby; Lease %s/%s is held by %s",
                        self.namespace,
                        self.name,
                        holder or "nobody",
                    )
                    last_holder = holder
            except (ApiError, OSError) as e:
                log.warning("leader election: cannot read or write the Lease: %s", e)
            await asyncio.sleep(self.timing.retry_s)

    async def keep(self) -> None:
        """Renew until the renew deadline passes without a successful renewal."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.timing.retry_s)
            try:
                if (await self._try())[0]:
                    continue
                raise LostLeadership(f"Lease {self.namespace}/{self.name} was taken by another")
            except (ApiError, OSError) as e:
                log.warning("leader election: renewing the Lease failed: %s", e)
            if loop.time() - self._renewed_at > self.timing.renew_deadline_s:
                raise LostLeadership(
                    f"could not renew Lease {self.namespace}/{self.name} for "
                    f"{self.timing.renew_deadline_s:g}s"
                )

    async def release(self) -> None:
        try:
            obj = await self.client.get(leader.LEASE_API, "Lease", self.namespace, self.name)
            lease = leader.parse_lease(obj)
            if lease and lease.holder == self.identity:
                await self.client.replace(
                    leader.released(lease, self.namespace, self.name, self.clock())
                )
                log.info("leader election: released Lease %s/%s", self.namespace, self.name)
        except (ApiError, OSError) as e:
            log.warning("leader election: could not release the Lease: %s", e)


async def _standby_liveness(endpoint: str | None) -> asyncio.Server | None:
    """While waiting, answer the liveness probe (kopf serves it only once it runs), so a
    standby replica is not restarted over and over by its kubelet."""
    if not endpoint:
        return None
    url = urlsplit(endpoint)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            body = b'{"leader": "standby"}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, url.hostname or "0.0.0.0", url.port or 80)


async def run_as_leader(
    elector: Elector, operate: Callable[[], Awaitable[None]], liveness: str | None
) -> int:
    """Wait for the Lease, run `operate` while holding it, give it back when `operate` ends."""
    server = await _standby_liveness(liveness)
    try:
        await elector.acquire()
    finally:
        if server is not None:
            server.close()
            await server.wait_closed()
    metrics.set_leader(True)
    operator = asyncio.ensure_future(operate())
    keeper = asyncio.ensure_future(elector.keep())
    done, _ = await asyncio.wait({operator, keeper}, return_when=asyncio.FIRST_COMPLETED)
    if keeper in done:
        error = keeper.exception()
        log.error("leader election: %s; exiting so that two operators never write at once", error)
        # No graceful stop: handlers mid-write must not finish after another leader started.
        os._exit(1)
    keeper.cancel()
    metrics.set_leader(False)
    await elector.release()
    operator.result()
    return 0
