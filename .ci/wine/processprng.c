/*
 * A stand-in bcryptprimitives.dll for Wine 8, which has no such DLL. Rust's std (1.78 and later)
 * imports ProcessPrng from it for HashMap seeds and the like, so without this every Windows test
 * binary fails to load under Wine. Only CI uses it: real Windows 10 and later ship the DLL.
 *
 * ProcessPrng is documented to always succeed; RtlGenRandom (exported by advapi32 as
 * SystemFunction036) is the older documented source of the same randomness and exists in Wine.
 */
#include <windows.h>
#define SECURITY_WIN32
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a ULONG length; SIZE_T is wider on 64-bit, so feed it in chunks. */
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk)) {
            /* ProcessPrng has no failure return that callers check; failing loudly is safer than
             * handing out predictable bytes. */
            RaiseFailFastException(NULL, NULL, 0);
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
