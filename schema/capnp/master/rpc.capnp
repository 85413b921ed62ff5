# mpspy's transcription of Bitcoin Core's src/ipc/capnp/rpc.capnp (master
# only). The upstream `$Cxx.namespace` import is omitted (no wire effect).

@0x9c3505dc45e146ac;

using Proxy = import "/mp/proxy.capnp";
# Imported but unused upstream too; kept so the compiled request lists the
# same imports.
using Common = import "common.capnp";

$Proxy.include("interfaces/rpc.h");
$Proxy.includeTypes("ipc/capnp/rpc-types.h");

interface Rpc $Proxy.wrap("interfaces::Rpc") {
    # request: a whole JSON-RPC request object as text; uri: "/" or
    # "/wallet/<name>"; user: the client's -rpcuser or empty.
    # result: the whole JSON-RPC reply object as text.
    executeRpc @0 (context :Proxy.Context, request :Text, uri :Text, user :Text) -> (result :Text);
}
