"""The gateway's health poller closes every connection it opens: after an answer,
a timed-out poll, an answer too large, and a gateway stopping mid-poll."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from orpheus_trio.server.gateway.upstreams import MAX_SYSTEM_BYTES, UpstreamWatch

Behaviour = Callable[[trio.SocketStream], Awaitable[None]]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Worker:
    """A scripted worker on port 0 that counts the connections still open on its side."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.open = 0
        self.accepted = 0
        self.url = ""

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.open += 1
        self.accepted += 1
        try:
            await stream.receive_some(65536)  # the request head
            await self.behaviour(stream)
            while await stream.receive_some(65536):  # until the poller closes its side
                pass
        except trio.BrokenResourceError:
            pass
        finally:
            self.open -= 1
            await stream.aclose()

    async def wait_all_closed(self) -> None:
        with trio.fail_after(5):
            while self.open:
                await trio.sleep(0.01)


async def never_answers(stream: trio.SocketStream) -> None:
    pass


async def sends_its_head_then_stalls(stream: trio.SocketStream) -> None:
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{")


async def answers_too_much(stream: trio.SocketStream) -> None:
    size = 2 * MAX_SYSTEM_BYTES
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
    await stream.send_all(b" " * (MAX_SYSTEM_BYTES + 65536))


def leaks(caught: list[warnings.WarningMessage], workers: list[Worker]) -> list[str]:
    """The ResourceWarnings about the poller's sockets to ``workers`` or its generators."""
    gc.collect()  # what was left for the garbage collector warns now
    ports = [f", {w.url.rsplit(':', 1)[1]})>" for w in workers]
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning)
        and ("generator" in str(w.message) or any(port in str(w.message) for port in ports))
    ]


async def test_timed_out_and_refused_polls_leave_no_connection_open(nursery: trio.Nursery) -> None:
    behaviours = [never_answers, sends_its_head_then_stalls, answers_too_much]
    workers = [Worker(behaviour) for behaviour in behaviours]
    for worker in workers:
        await worker.start(nursery)
    watch = UpstreamWatch([w.url for w in workers], timeout_s=0.05)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()  # earlier tests' garbage is closed now, not in the middle of the count
        before = open_fds()
        for _ in range(40):
            await watch.poll()
        for worker in workers:
            await worker.wait_all_closed()
        assert open_fds() <= before  # fewer is another test's socket collected: not a leak
        await watch.aclose()
        assert leaks(caught, workers) == []
    assert [w.accepted for w in workers] == [40, 40, 40]
    statuses = [watch.statuses[w.url] for w in workers]
    assert [status.error for status in statuses] == ["timeout", "timeout", "bad_body"]
    assert statuses[0].detail == statuses[1].detail == "no whole answer within 0.05 s"
    assert statuses[2].detail == (
        f"ValueError: the answer is too large (over {MAX_SYSTEM_BYTES} bytes)"
    )


async def test_a_gateway_stopping_mid_poll_closes_the_poll_connection(
    nursery: trio.Nursery,
) -> None:
    worker = Worker(never_answers)
    await worker.start(nursery)
    watch = UpstreamWatch([worker.url], timeout_s=10, interval_s=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()  # earlier tests' garbage is closed now, not in the middle of the count
        before = open_fds()
        for _ in range(20):
            async with trio.open_nursery() as gateway:
                gateway.start_soon(watch.watch)
                with trio.fail_after(5):
                    while not worker.open:  # the poll is in flight
                        await trio.sleep(0.005)
                gateway.cancel_scope.cancel()  # the gateway stops
            await worker.wait_all_closed()
        assert open_fds() <= before  # fewer is another test's socket collected: not a leak
        await watch.aclose()
        assert leaks(caught, [worker]) == []
    assert worker.accepted == 20


async def test_answered_polls_reuse_one_connection_and_close_it_with_the_watch(
    nursery: trio.Nursery,
) -> None:
    answer = b'{"voices": ["tara"], "draining": false}'

    async def answers(stream: trio.SocketStream) -> None:
        while True:
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
            )
            if not await stream.receive_some(65536):
                return

    worker = Worker(answers)
    await worker.start(nursery)
    watch = UpstreamWatch([worker.url])
    for _ in range(10):
        await watch.poll()
    assert watch.statuses[worker.url].voices == ("tara",)
    assert (worker.accepted, worker.open) == (1, 1)
    await watch.aclose()
    await worker.wait_all_closed()
