# mpspy's transcription of libmultiprocess's example printer.capnp (mpexample).
# The upstream `$Cxx.namespace` import is omitted (no wire effect).

@0x893db95f456ed0e3;

using Proxy = import "/mp/proxy.capnp";

$Proxy.include("printer.h");
$Proxy.includeTypes("types.h");

interface PrinterInterface $Proxy.wrap("Printer") {
    destroy @0 (context :Proxy.Context) -> ();
    print @1 (context :Proxy.Context, text :Text) -> ();
}
