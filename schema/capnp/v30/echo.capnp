# mpspy's transcription of Bitcoin Core's src/ipc/capnp/echo.capnp.
# Identical in v30, v31 and master. The upstream `$Cxx.namespace` import is
# omitted (no wire effect).

@0x888b4f7f51e691f7;

using Proxy = import "/mp/proxy.capnp";

$Proxy.include("interfaces/echo.h");
$Proxy.includeTypes("ipc/capnp/echo-types.h");

interface Echo $Proxy.wrap("interfaces::Echo") {
    destroy @0 (context :Proxy.Context) -> ();
    echo @1 (context :Proxy.Context, echo :Text) -> (result :Text);
}
