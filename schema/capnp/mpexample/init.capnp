# mpspy's transcription of libmultiprocess's example init.capnp (mpexample).
# IDs derive from the file ID below and the declared names; keep both exact.
# The upstream `$Cxx.namespace` import is omitted (no wire effect).

@0xba5a7448664901b1;

using Proxy = import "/mp/proxy.capnp";
using Calculator = import "calculator.capnp";
using Printer = import "printer.capnp";

$Proxy.include("calculator.h");
$Proxy.include("init.h");
$Proxy.include("printer.h");
$Proxy.includeTypes("types.h");

interface InitInterface $Proxy.wrap("Init") {
    construct @0 (threadMap :Proxy.ThreadMap) -> (threadMap :Proxy.ThreadMap);
    makeCalculator @1 (context :Proxy.Context, print :Printer.PrinterInterface) -> (result :Calculator.CalculatorInterface);
    makePrinter @2 (context :Proxy.Context) -> (result :Printer.PrinterInterface);
}
