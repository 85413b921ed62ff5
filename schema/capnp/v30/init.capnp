# mpspy's transcription of Bitcoin Core's src/ipc/capnp/init.capnp as of
# v30.x (v30.0 through v30.3). The upstream `$Cxx.namespace` import is omitted
# (no wire effect).

@0xf2c5cfa319406aa6;

using Proxy = import "/mp/proxy.capnp";
using Echo = import "echo.capnp";
using Mining = import "mining.capnp";

$Proxy.include("interfaces/echo.h");
$Proxy.include("interfaces/init.h");
$Proxy.include("interfaces/mining.h");
$Proxy.includeTypes("ipc/capnp/init-types.h");

interface Init $Proxy.wrap("interfaces::Init") {
    construct @0 (threadMap :Proxy.ThreadMap) -> (threadMap :Proxy.ThreadMap);
    makeEcho @1 (context :Proxy.Context) -> (result :Echo.Echo);
    # v30 serves Mining at @2. v31 moved it to @3 (and turned @2 into a stub
    # that always fails) so that v30 clients fail loudly against newer nodes
    # instead of silently misdecoding the changed Mining params.
    makeMining @2 (context :Proxy.Context) -> (result :Mining.Mining);
}
