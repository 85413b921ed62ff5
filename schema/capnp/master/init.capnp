# mpspy's transcription of Bitcoin Core's src/ipc/capnp/init.capnp as of
# master (2026-08). The upstream `$Cxx.namespace` import is omitted (no wire
# effect).

@0xf2c5cfa319406aa6;

using Proxy = import "/mp/proxy.capnp";
using Echo = import "echo.capnp";
using Mining = import "mining.capnp";
using Rpc = import "rpc.capnp";

$Proxy.include("interfaces/echo.h");
$Proxy.include("interfaces/init.h");
$Proxy.include("interfaces/mining.h");
$Proxy.includeTypes("ipc/capnp/init-types.h");

# Declaration order is 0, 1, 3, 4, 2 (as upstream). Ordinals decide the wire;
# declaration order only shows up as each method's codeOrder, which the layout
# test also pins.
interface Init $Proxy.wrap("interfaces::Init") {
    construct @0 (threadMap :Proxy.ThreadMap) -> (threadMap :Proxy.ThreadMap);
    makeEcho @1 (context :Proxy.Context) -> (result :Echo.Echo);
    makeMining @3 (context :Proxy.Context) -> (result :Mining.Mining);
    # Master only (added 2026-03-30).
    makeRpc @4 (context :Proxy.Context) -> (result :Rpc.Rpc);
    # Stub kept at v30's makeMining ordinal. The server always answers it with
    # "Old mining interface (@2) not supported. Please update your client!".
    makeMiningOld2 @2 () -> ();
}
