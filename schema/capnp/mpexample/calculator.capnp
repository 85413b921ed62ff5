# mpspy's transcription of libmultiprocess's example calculator.capnp (mpexample).
# The upstream `$Cxx.namespace` import is omitted (no wire effect).

@0xb67dbf34061180a9;

using Proxy = import "/mp/proxy.capnp";

$Proxy.include("calculator.h");
$Proxy.includeTypes("types.h");

interface CalculatorInterface $Proxy.wrap("Calculator") {
    destroy @0 (context :Proxy.Context) -> ();
    solveEquation @1 (context :Proxy.Context, eqn :Text) -> ();
}
