# mpspy's transcription of Bitcoin Core's src/ipc/capnp/common.capnp.
# Identical in v30, v31 and master. The upstream `$Cxx.namespace` import is
# omitted (no wire effect).

@0xcd2c6232cb484a28;

using Proxy = import "/mp/proxy.capnp";

$Proxy.includeTypes("ipc/capnp/common-types.h");

struct BlockRef $Proxy.wrap("interfaces::BlockRef") {
    hash @0 :Data;
    height @1 :Int32;
}
