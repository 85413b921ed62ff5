#!/usr/bin/env python3
"""A pycapnp client for Bitcoin Core's IPC Init interface (master schemas).

It talks like the upstream functional tests (protocol digest section 4.7):
construct() without a ThreadMap, one makeThread("pyclient"), and a Context
with only `thread` set. Each result is printed as one JSON line; the exit
status is non-zero on any unexpected result.

    client.py unix:PATH [--echo TEXT]... [--count N] [--mining] [--hang] [--misbehave]
"""

import argparse
import asyncio
import json
import os
import sys

import capnp

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schema", "capnp", "master")


def load(name):
    # The schemas import "/mp/proxy.capnp": the schema directory is the import root.
    return capnp.load(os.path.join(SCHEMA_DIR, name), imports=[SCHEMA_DIR])


def emit(call, **fields):
    print(json.dumps({"call": call, **fields}), flush=True)


class Unexpected(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise Unexpected(what)


async def mining_calls(init, ctx, mining_capnp):
    mining = (await init.makeMining(ctx)).result
    tip = await mining.getTip(ctx)
    expect(tip.hasResult, "getTip: no tip")
    emit("getTip", height=tip.result.height, hash=bytes(tip.result.hash)[::-1].hex())

    options = mining_capnp.BlockCreateOptions.new_message()
    template = (await mining.createNewBlock(ctx, options, False)).result
    header = bytes((await template.getBlockHeader(ctx)).result)
    emit("getBlockHeader", size=len(header))
    expect(len(header) == 80, "getBlockHeader: expected 80 bytes")
    block = bytes((await template.getBlock(ctx)).result)
    emit("getBlock", size=len(block))
    expect(block[:80] == header, "getBlock: the block does not start with its header")

    wait = await template.waitNext(ctx, mining_capnp.BlockWaitOptions.new_message(timeout=50.0))
    # A null template after the timeout, unless the node has a reason to hand out a new one (a
    # real regtest node does when its tip is older than 20 minutes: a fresh chain's genesis).
    if wait._has("result"):
        await wait.result.destroy(ctx)
        emit("waitNext", result="template")
    else:
        emit("waitNext", result=None)
    await template.destroy(ctx)
    emit("BlockTemplate.destroy")

    try:
        await mining.checkBlock(ctx, b"\0" * 10, mining_capnp.BlockCheckOptions.new_message())
    except capnp.KjException as e:
        emit("checkBlock", exception=e.description)
        expect("SpanReader::read(): end of data" in e.description, "checkBlock: unexpected exception")
    else:
        raise Unexpected("checkBlock: expected an exception")


async def misbehave(init, ctx, proxy_capnp, mining_capnp):
    """Misuses IPC on purpose, for mpspy's lints: polls a long-poll method in a tight loop
    (polling-storm), calls without a thread (null-thread), and leaves with a block template
    it never destroyed (alive-at-disconnect)."""
    mining = (await init.makeMining(ctx)).result
    tip = (await mining.getTip(ctx)).result
    for _ in range(30):
        await mining.waitTipChanged(ctx, tip.hash, 0.0)
    emit("waitTipChanged", times=30)
    try:
        await mining.getTip(proxy_capnp.Context.new_message())
    except capnp.KjException as e:
        emit("getTip without a thread", exception=e.description)
    else:
        emit("getTip without a thread", exception=None)
    options = mining_capnp.BlockCreateOptions.new_message()
    (await mining.createNewBlock(ctx, options, False)).result
    emit("createNewBlock", destroyed=False)


async def main(args):
    if not args.address.startswith("unix:"):
        raise Unexpected(f"Unrecognized address '{args.address}'")
    proxy_capnp = load("mp/proxy.capnp")
    init_capnp = load("init.capnp")
    mining_capnp = load("mining.capnp")

    stream = await capnp.AsyncIoStream.create_unix_connection(args.address[len("unix:"):])
    client = capnp.TwoPartyClient(stream)
    init = client.bootstrap().cast_as(init_capnp.Init)

    thread_map = (await init.construct()).threadMap
    thread = (await thread_map.makeThread("pyclient")).result
    ctx = proxy_capnp.Context.new_message()
    ctx.thread = thread

    echo = (await init.makeEcho(ctx)).result
    for text in args.echo or ["hello"]:
        for _ in range(args.count):
            got = (await echo.echo(ctx, text)).result
            emit("echo", result=got)
            expect(got == text, f"echo returned {got!r}, expected {text!r}")
    await echo.destroy(ctx)
    emit("Echo.destroy")

    if args.mining:
        await mining_calls(init, ctx, mining_capnp)

    if args.misbehave:
        await misbehave(init, ctx, proxy_capnp, mining_capnp)

    if args.hang:
        # Leave a call pending (for tests that kill the server mid-call).
        mining = (await init.makeMining(ctx)).result
        tip = (await mining.getTip(ctx)).result
        pending = mining.waitTipChanged(ctx, tip.hash, 60000.0)
        emit("waiting")
        await pending


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("address", help="unix:PATH")
    p.add_argument("--echo", action="append", metavar="TEXT", help="text to echo (repeatable)")
    p.add_argument("--count", type=int, default=1, help="echo each text N times")
    p.add_argument("--mining", action="store_true", help="also call Mining and BlockTemplate")
    p.add_argument("--hang", action="store_true", help="end with a waitTipChanged that takes a minute")
    p.add_argument("--misbehave", action="store_true", help="misuse IPC on purpose (see misbehave)")
    return p.parse_args()


if __name__ == "__main__":
    try:
        asyncio.run(capnp.run(main(parse())))
    except (Unexpected, capnp.KjException, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
