# mpspy's transcription of Bitcoin Core's src/ipc/capnp/mining.capnp as of
# v30.1 (also v30.2, v30.3). v30.0 is the same minus BlockTemplate.interruptWait @11.
# The upstream `$Cxx.namespace` import is omitted (no wire effect).
#
# Interface and struct IDs are the same in every version (they derive from the
# file ID and the names); ordinals, params and defaults are what differ.

@0xc77d03df6a41b505;

using Proxy = import "/mp/proxy.capnp";
using Common = import "common.capnp";

$Proxy.include("interfaces/mining.h");
$Proxy.includeTypes("ipc/capnp/mining-types.h");

interface Mining $Proxy.wrap("interfaces::Mining") {
    isTestChain @0 (context :Proxy.Context) -> (result :Bool);
    isInitialBlockDownload @1 (context :Proxy.Context) -> (result :Bool);
    getTip @2 (context :Proxy.Context) -> (result :Common.BlockRef, hasResult :Bool);
    # No default on timeout in v30 (0.0). v31 and later default it to
    # maxDouble; the XOR encoding makes the same bytes mean different values.
    waitTipChanged @3 (context :Proxy.Context, currentTip :Data, timeout :Float64) -> (result :Common.BlockRef);
    # v30's createNewBlock and checkBlock take no Context (they run on the
    # server's event-loop thread). v31 prepends `context`, shifting the
    # pointer slots under the same ordinals.
    createNewBlock @4 (options :BlockCreateOptions) -> (result :BlockTemplate);
    checkBlock @5 (block :Data, options :BlockCheckOptions) -> (reason :Text, debug :Text, result :Bool);
}

interface BlockTemplate $Proxy.wrap("interfaces::BlockTemplate") {
    destroy @0 (context :Proxy.Context) -> ();
    getBlockHeader @1 (context :Proxy.Context) -> (result :Data);
    getBlock @2 (context :Proxy.Context) -> (result :Data);
    getTxFees @3 (context :Proxy.Context) -> (result :List(Int64));
    getTxSigops @4 (context :Proxy.Context) -> (result :List(Int64));
    # v30 returns the serialized coinbase transaction; v31 returns a CoinbaseTx struct.
    getCoinbaseTx @5 (context :Proxy.Context) -> (result :Data);
    getCoinbaseCommitment @6 (context :Proxy.Context) -> (result :Data);
    getWitnessCommitmentIndex @7 (context :Proxy.Context) -> (result :Int32);
    getCoinbaseMerklePath @8 (context :Proxy.Context) -> (result :List(Data));
    submitSolution @9 (context :Proxy.Context, version :UInt32, timestamp :UInt32, nonce :UInt32, coinbase :Data) -> (result :Bool);
    waitNext @10 (context :Proxy.Context, options :BlockWaitOptions) -> (result :BlockTemplate);
    # Backported in v30.1 (PR #33676); absent from v30.0. No Context: runs on
    # the event-loop thread so it can interrupt a waitNext in progress.
    interruptWait @11 () -> ();
}

# The option structs have NO defaults in v30: every field decodes as
# zero/false when the sender leaves it at zero. v31 added C++-matching
# defaults (true/8000/400/maxDouble/maxMoney). Primitive fields are stored
# XOR their default, so these must stay default-free to decode a v30 peer.
struct BlockCreateOptions $Proxy.wrap("node::BlockCreateOptions") {
    useMempool @0 :Bool $Proxy.name("use_mempool");
    blockReservedWeight @1 :UInt64 $Proxy.name("block_reserved_weight");
    coinbaseOutputMaxAdditionalSigops @2 :UInt64 $Proxy.name("coinbase_output_max_additional_sigops");
}

struct BlockWaitOptions $Proxy.wrap("node::BlockWaitOptions") {
    timeout @0 :Float64 $Proxy.name("timeout");
    feeThreshold @1 :Int64 $Proxy.name("fee_threshold");
}

struct BlockCheckOptions $Proxy.wrap("node::BlockCheckOptions") {
    checkMerkleRoot @0 :Bool $Proxy.name("check_merkle_root");
    checkPow @1 :Bool $Proxy.name("check_pow");
}
