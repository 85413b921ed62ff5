# mpspy's transcription of Bitcoin Core's src/ipc/capnp/mining.capnp as of
# master (2026-08, after the 2026-07-22 submitSolution change). The upstream
# `$Cxx.namespace` import is omitted (no wire effect).
#
# Interface and struct IDs are the same in every version (they derive from the
# file ID and the names); ordinals, params and defaults are what differ.

@0xc77d03df6a41b505;

using Proxy = import "/mp/proxy.capnp";
using Common = import "common.capnp";

$Proxy.include("interfaces/mining.h");
$Proxy.includeTypes("ipc/capnp/mining-types.h");

# Constants mirroring the C++ defaults (new in v31). They are used as schema
# defaults below, and defaults change the wire bits (primitive fields are
# stored XOR their default), so the values must be exact.
const maxMoney :Int64 = 2100000000000000;          # MAX_MONEY in satoshis
const maxDouble :Float64 = 1.7976931348623157e308; # DBL_MAX, bits 0x7fefffffffffffff
const defaultBlockReservedWeight :UInt32 = 8000;
const defaultCoinbaseOutputMaxAdditionalSigops :UInt32 = 400;

interface Mining $Proxy.wrap("interfaces::Mining") {
    isTestChain @0 (context :Proxy.Context) -> (result :Bool);
    isInitialBlockDownload @1 (context :Proxy.Context) -> (result :Bool);
    getTip @2 (context :Proxy.Context) -> (result :Common.BlockRef, hasResult :Bool);
    # timeout defaults to maxDouble from v31 on (v30: no default).
    waitTipChanged @3 (context :Proxy.Context, currentTip :Data, timeout :Float64 = .maxDouble) -> (result :Common.BlockRef);
    # Same ordinals as v30, but v31 prepends `context`, so v30's `options`
    # pointer lands where v31 expects `context`. That is why Init.makeMining
    # moved from @2 to @3 in this version.
    createNewBlock @4 (context :Proxy.Context, options :BlockCreateOptions, cooldown :Bool = true) -> (result :BlockTemplate);
    checkBlock @5 (context :Proxy.Context, block :Data, options :BlockCheckOptions) -> (reason :Text, debug :Text, result :Bool);
    # No Context: runs on the server's event-loop thread.
    interrupt @6 () -> ();
    # Master only (added 2026-05-28 and 2026-07-07).
    submitBlock @7 (context :Proxy.Context, block :Data) -> (reason :Text, debug :Text, result :Bool);
    getTransactionsByTxID @8 (context :Proxy.Context, txids :List(Data)) -> (result :List(Data));
    getTransactionsByWitnessID @9 (context :Proxy.Context, wtxids :List(Data)) -> (result :List(Data));
}

interface BlockTemplate $Proxy.wrap("interfaces::BlockTemplate") {
    destroy @0 (context :Proxy.Context) -> ();
    getBlockHeader @1 (context :Proxy.Context) -> (result :Data);
    getBlock @2 (context :Proxy.Context) -> (result :Data);
    getTxFees @3 (context :Proxy.Context) -> (result :List(Int64));
    getTxSigops @4 (context :Proxy.Context) -> (result :List(Int64));
    # v31 returns a CoinbaseTx struct here (v30: serialized tx as Data).
    getCoinbaseTx @5 (context :Proxy.Context) -> (result :CoinbaseTx);
    # Ordinals 6-9 were renumbered relative to v30 (getCoinbaseCommitment and
    # getWitnessCommitmentIndex were removed).
    getCoinbaseMerklePath @6 (context :Proxy.Context) -> (result :List(Data));
    # Declaration order here is 0-6, 10, 8, 9, 7 (as upstream): the new
    # submitSolution @10 is declared where @7 used to be and the deprecated
    # @7 moved to the end. Only codeOrder sees this; ordinals decide the wire.
    # submitSolution now also returns reason/debug, hence the new ordinal.
    submitSolution @10 (context :Proxy.Context, version :UInt32, timestamp :UInt32, nonce :UInt32, coinbase :Data) -> (reason :Text, debug :Text, result :Bool);
    waitNext @8 (context :Proxy.Context, options :BlockWaitOptions) -> (result :BlockTemplate);
    # No Context: runs on the event-loop thread so it can interrupt waitNext.
    interruptWait @9 () -> ();
    # v31's submitSolution, kept at its ordinal (so its $Params/$Results IDs
    # equal v31's). The server always fails it with "Old submitSolution (@7)
    # not supported. Please update your client!".
    submitSolutionOld7 @7 (context :Proxy.Context, version :UInt32, timestamp :UInt32, nonce :UInt32, coinbase :Data) -> (result :Bool);
}

# From v31 on, the option structs carry the C++ defaults. A v31 decoder reading
# v30 bytes therefore sees e.g. useMempool = true where v30 meant false: pick
# the schema set that matches the peer.
struct BlockCreateOptions $Proxy.wrap("node::BlockCreateOptions") {
    useMempool @0 :Bool = true $Proxy.name("use_mempool");
    blockReservedWeight @1 :UInt64 = .defaultBlockReservedWeight $Proxy.name("block_reserved_weight");
    coinbaseOutputMaxAdditionalSigops @2 :UInt64 = .defaultCoinbaseOutputMaxAdditionalSigops $Proxy.name("coinbase_output_max_additional_sigops");
}

struct BlockWaitOptions $Proxy.wrap("node::BlockWaitOptions") {
    timeout @0 :Float64 = .maxDouble $Proxy.name("timeout");       # milliseconds
    feeThreshold @1 :Int64 = .maxMoney $Proxy.name("fee_threshold"); # satoshis
}

struct BlockCheckOptions $Proxy.wrap("node::BlockCheckOptions") {
    checkMerkleRoot @0 :Bool = true $Proxy.name("check_merkle_root");
    checkPow @1 :Bool = true $Proxy.name("check_pow");
}

# New in v31 (unchanged in master): what a miner needs to build its own
# coinbase transaction.
struct CoinbaseTx $Proxy.wrap("node::CoinbaseTx") {
    version @0 :UInt32 $Proxy.name("version");
    sequence @1 :UInt32 $Proxy.name("sequence");
    scriptSigPrefix @2 :Data $Proxy.name("script_sig_prefix");
    witness @3 :Data $Proxy.name("witness");
    blockRewardRemaining @4 :Int64 $Proxy.name("block_reward_remaining");
    requiredOutputs @5 :List(Data) $Proxy.name("required_outputs");
    lockTime @6 :UInt32 $Proxy.name("lock_time");
}
