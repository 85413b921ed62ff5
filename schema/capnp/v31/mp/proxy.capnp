# mpspy's own transcription of libmultiprocess's proxy schema as carried in
# Bitcoin Core v31.0 (libmultiprocess subtree v8).
#
# Only the facts that matter are reproduced: the file ID (every nested ID is
# derived from it plus the declared name), the declared names, ordinals, types
# and declaration order. The upstream file also imports /capnp/c++.capnp for
# `$Cxx.namespace("mp")`; that annotation has no wire effect and is left out so
# that this directory is self-contained.

@0xcc316e3f71a040fb;

# Code-generation annotations of libmultiprocess. They have no effect on the
# wire, but the other schemas use them, so they are declared here with the
# upstream names (their IDs derive from the names) and value types.
# Unlike the standalone libmultiprocess (see ../mpexample), the Bitcoin copy
# declares no `exception` or `skip` annotation.
annotation include(file): Text;
annotation includeTypes(file): Text;
annotation wrap(interface, struct): Text;
annotation count(param, struct, interface): Int32;
annotation name(field, method): Text;

interface ThreadMap $count(0) {
    makeThread @0 (name :Text) -> (result :Thread);
    # No makePool @1 here: it arrived with libmultiprocess v11, which this
    # version does not carry (master does).
}

interface Thread {
    getName @0 () -> (result :Text);
}

struct Context $count(0) {
    thread @0 :Thread;
    callbackThread @1 :Thread;
}
