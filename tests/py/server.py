#!/usr/bin/env python3
"""A pycapnp server of Bitcoin Core's IPC Init interface (master schemas).

An independent Cap'n Proto implementation on the server side, for testing
mpspy's clients. It serves a fresh `Init` to each connection on a Unix socket
and follows the libmultiprocess conventions where they are visible on the wire
(protocol digest sections 4.1-4.5):

- `construct(threadMap)` keeps the client's ThreadMap and, to prove that
  callbacks into the client work, at once calls `makeThread("pyserver-callback")`
  on it and `getName()` on the Thread it returns. The name is remembered, and
  `Echo.echo("callback-name")` returns it. A null threadMap (pycapnp clients,
  upstream functional tests) skips the callback. The result is this server's
  ThreadMap, whose threads are named `pyserver/<name>`.
- Every call with a Context fails with `no thread specified` unless
  `context.thread` is set.
- `makeEcho` -> Echo (`echo`, `destroy`); `makeMining` -> Mining (`getTip`
  gives hash bytes 0..31 and height 7, `isTestChain` gives true; the rest are
  left unimplemented).

    server.py unix:PATH

Prints `listening` once it accepts connections; SIGTERM or SIGINT ends it
cleanly (exit status 0, socket removed).
"""

import asyncio
import os
import signal
import stat
import sys

import capnp

SCHEMA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schema", "capnp", "master")

# The name this server asks the client's ThreadMap for in its callback.
CALLBACK_THREAD = "pyserver-callback"
# The echo text that returns the callback's result instead of itself.
CALLBACK_ECHO = "callback-name"


def load(name):
    # The schemas import "/mp/proxy.capnp": the schema directory is the import root.
    return capnp.load(os.path.join(SCHEMA_DIR, name), imports=[SCHEMA_DIR])


proxy_capnp = load("mp/proxy.capnp")
init_capnp = load("init.capnp")
echo_capnp = load("echo.capnp")
mining_capnp = load("mining.capnp")


def log(msg):
    print(f"server.py: {msg}", file=sys.stderr, flush=True)


def require_thread(context):
    """libmultiprocess runs Context calls on `context.thread`; without one there is nowhere to run."""
    if not context._has("thread"):
        raise Exception("no thread specified")


class ThreadImpl(proxy_capnp.Thread.Server):
    def __init__(self, name):
        self.name = name

    async def getName(self, _context, **kwargs):
        return self.name


class ThreadMapImpl(proxy_capnp.ThreadMap.Server):
    # makePool stays unimplemented: this server has no pools.
    async def makeThread(self, name, _context, **kwargs):
        return ThreadImpl("pyserver/" + name)


class Connection:
    """What one connection's Init remembers."""

    def __init__(self):
        self.client_thread_maps = []
        # Future of the name the client's Thread gave in the construct() callback;
        # None until a construct() with a ThreadMap arrives.
        self.callback_name = None


class InitImpl(init_capnp.Init.Server):
    def __init__(self):
        self.conn = Connection()

    async def construct(self, threadMap, _context, **kwargs):
        if _context.params._has("threadMap"):
            self.conn.client_thread_maps.append(threadMap)
            done = asyncio.get_running_loop().create_future()
            if self.conn.callback_name is None or self.conn.callback_name.done():
                self.conn.callback_name = done
            try:
                thread = (await threadMap.makeThread(CALLBACK_THREAD)).result
                name = (await thread.getName()).result
            except Exception as e:
                err = Exception(f"callback into the client's ThreadMap failed: {e}")
                done.set_exception(err)
                done.exception()  # retrieved: no "never retrieved" warning if nobody asks
                log(str(err))
                raise err
            done.set_result(name)
        return ThreadMapImpl()

    async def makeEcho(self, context, _context, **kwargs):
        require_thread(context)
        return EchoImpl(self.conn)

    async def makeMining(self, context, _context, **kwargs):
        require_thread(context)
        return MiningImpl()

    # makeMiningOld2 and makeRpc stay unimplemented.


class EchoImpl(echo_capnp.Echo.Server):
    def __init__(self, conn):
        self.conn = conn

    async def destroy(self, context, _context, **kwargs):
        require_thread(context)

    async def echo(self, context, echo, _context, **kwargs):
        require_thread(context)
        if echo == CALLBACK_ECHO:
            if self.conn.callback_name is None:
                raise Exception("no callback made: construct() got no ThreadMap")
            return await self.conn.callback_name
        return echo


class MiningImpl(mining_capnp.Mining.Server):
    async def isTestChain(self, context, _context, **kwargs):
        require_thread(context)
        return True

    async def getTip(self, context, _context, **kwargs):
        require_thread(context)
        results = _context.results
        tip = results.init("result")
        tip.hash = bytes(range(32))
        tip.height = 7
        results.hasResult = True


async def serve(path):
    # Remove a stale socket (never any other kind of file).
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    streams = set()

    async def connected(stream):
        streams.add(stream)
        try:
            # One Init per connection, as libmultiprocess does.
            await capnp.TwoPartyServer(stream, bootstrap=InitImpl()).on_disconnect()
        except (capnp.KjException, ConnectionError):
            pass  # the client went away mid-session; nothing to clean up
        finally:
            streams.discard(stream)

    server = await capnp.AsyncIoStream.create_unix_server(connected, path)
    print("listening", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        for s in list(streams):
            s.close()
        try:
            # Since Python 3.12 this waits for the connections too; they are closed above.
            await asyncio.wait_for(server.wait_closed(), 2)
        except asyncio.TimeoutError:
            pass
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def main():
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    address = sys.argv[1]
    if not address.startswith("unix:") or len(address) == len("unix:"):
        print(f"error: Unrecognized address '{address}' (want unix:PATH)", file=sys.stderr)
        return 2
    try:
        asyncio.run(capnp.run(serve(address[len("unix:"):])))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
