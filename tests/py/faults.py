#!/usr/bin/env python3
"""A pycapnp client that reports what each call got, for mpspy's fault-injection tests.

It connects as tests/py/client.py does (construct, makeThread("faults"), a Context with only
`thread`), makes Mining, then runs the steps given, each printed as one JSON line:
{"step": NAME, "ok": true, "ms": F} or {"step": NAME, "exception": TYPE, "description": TEXT,
"ms": F}. A call that fails is reported, not fatal: the tests look at what the client saw.

    faults.py unix:PATH STEP...

Steps: getTip (Mining.getTip), isTestChain (Mining.isTestChain), pipelined (Init.makeMining
and getTip on its answer, without waiting for the first; reports both).
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


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def report(step, call):
    start = time.monotonic()
    try:
        await call
    except capnp.KjException as e:
        emit(step=step, exception=str(e.type), description=e.description,
             ms=(time.monotonic() - start) * 1e3)
        return False
    emit(step=step, ok=True, ms=(time.monotonic() - start) * 1e3)
    return True


async def main(address, steps):
    proxy_capnp = load("mp/proxy.capnp")
    init_capnp = load("init.capnp")
    stream = await capnp.AsyncIoStream.create_unix_connection(address[len("unix:"):])
    client = capnp.TwoPartyClient(stream)
    init = client.bootstrap().cast_as(init_capnp.Init)
    thread_map = (await init.construct()).threadMap
    thread = (await thread_map.makeThread("faults")).result
    ctx = proxy_capnp.Context.new_message()
    ctx.thread = thread
    mining = (await init.makeMining(ctx)).result
    for step in steps:
        if step == "getTip":
            await report(step, mining.getTip(ctx))
        elif step == "isTestChain":
            await report(step, mining.isTestChain(ctx))
        elif step == "pipelined":
            made = init.makeMining(ctx)
            tip = made.result.getTip(ctx)
            await report("pipelined.makeMining", made)
            await report("pipelined.getTip", tip)
        else:
            raise SystemExit(f"unknown step {step}")


if __name__ == "__main__":
    try:
        asyncio.run(capnp.run(main(sys.argv[1], sys.argv[2:])))
    except capnp.KjException as e:
        # Setting up failed (the tests expect the steps to run).
        emit(step="setup", exception=str(e.type), description=e.description)
        sys.exit(1)
