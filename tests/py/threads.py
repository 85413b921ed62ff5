#!/usr/bin/env python3
"""Probes how a node runs Context calls: per-Thread queueing, pools and their errors.

Run against bitcoin-node master and against mpspy-testpeer, it must print the same records
(the tests in testpeer/tests/peer.rs check both). One JSON line per check; times in ms.

    threads.py unix:PATH
"""

import asyncio
import json
import os
import sys
import time

import capnp

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schema", "capnp", "master")


def load(name):
    return capnp.load(os.path.join(SCHEMA_DIR, name), imports=[SCHEMA_DIR])


def emit(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


async def main(address):
    proxy = load("mp/proxy.capnp")
    init_capnp = load("init.capnp")
    if not address.startswith("unix:"):
        raise SystemExit(f"Unrecognized address '{address}'")
    stream = await capnp.AsyncIoStream.create_unix_connection(address[len("unix:"):])
    client = capnp.TwoPartyClient(stream)
    init = client.bootstrap().cast_as(init_capnp.Init)
    thread_map = (await init.construct()).threadMap
    t1 = (await thread_map.makeThread("t1")).result
    t2 = (await thread_map.makeThread("t2")).result
    on_t1 = proxy.Context.new_message(thread=t1)
    on_t2 = proxy.Context.new_message(thread=t2)
    nowhere = proxy.Context.new_message()
    mining = (await init.makeMining(on_t1)).result
    tip = (await mining.getTip(on_t1)).result.hash

    async def race(**calls):
        """Sends the waits in the order given; returns their names in the order they returned."""
        start = time.monotonic()
        done = []

        async def one(name, ctx, ms):
            await mining.waitTipChanged(ctx, tip, ms)
            done.append((name, round((time.monotonic() - start) * 1000)))

        await asyncio.gather(*(one(name, ctx, ms) for name, (ctx, ms) in calls.items()))
        return {"order": [n for n, _ in done], "ms": dict(done)}

    async def failure(call):
        try:
            await call
        except capnp.KjException as e:
            return e.description.removeprefix("remote exception: ")
        return None

    emit("one_thread", **await race(long=(on_t1, 300), short=(on_t1, 20)))
    emit("two_threads", **await race(long=(on_t1, 600), short=(on_t2, 20)))

    # Canceled while queued: it still holds the Thread for its whole wait.
    start = time.monotonic()
    first = asyncio.ensure_future(mining.waitTipChanged(on_t1, tip, 200))
    canceled = asyncio.ensure_future(mining.waitTipChanged(on_t1, tip, 300))
    await asyncio.sleep(0.05)
    canceled.cancel()
    await mining.waitTipChanged(on_t1, tip, 20)
    await first
    emit("canceled_while_queued", last_ms=round((time.monotonic() - start) * 1000))

    class ClientThread(proxy.Thread.Server):
        """A Thread hosted by this client: not one of the server's."""

        async def getName(self, **kwargs):
            return "client"

    errors = [await failure(mining.waitTipChanged(nowhere, tip, 1))]
    errors.append(await failure(mining.waitTipChanged(proxy.Context.new_message(thread=ClientThread()), tip, 1)))
    errors.append(await failure(mining.waitTipChanged(proxy.Context.new_message(callbackThread=t1), tip, 1)))
    await thread_map.makePool(0)
    errors.append(await failure(mining.waitTipChanged(nowhere, tip, 1)))
    await thread_map.makePool(2)
    errors.append(await failure(thread_map.makePool(1)))
    other = (await init.construct()).threadMap
    errors.append(await failure(other.makePool(1)))
    emit("errors", texts=errors)

    emit("pool", **await race(a=(nowhere, 400), b=(nowhere, 50), c=(nowhere, 50), d=(nowhere, 50)))


if __name__ == "__main__":
    asyncio.run(capnp.run(main(sys.argv[1])))
