/*
 * A stand-in for Windows' bcryptprimitives.dll, which wine 8.0 (Debian 12's)
 * lacks: Rust programs since 1.78 (through getrandom) import ProcessPrng from
 * it, and without it they exit with 53 before printing anything. Real
 * Windows and wine 9 have it. It fills the buffer from the system RNG, as
 * the real one does.
 */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
