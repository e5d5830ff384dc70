/*
 * memcpy and memset that never make an unaligned access, for the Cortex-M3
 * test build that traps unaligned accesses (MF_TEST_TRAP_UNALIGNED, as a
 * Cortex-M0 would fault). newlib's ARMv7-M memcpy copies from a misaligned
 * source with word loads, legal on the M3/M4 but not on an ARMv6-M core,
 * whose own newlib memcpy is alignment-safe. Linking these in their place
 * lets the trap catch only what the kernels themselves do.
 *
 * Word copies where both pointers allow them, bytes otherwise; the loops are
 * kept from being turned back into calls to memcpy/memset.
 */
#include <stddef.h>
#include <stdint.h>

#define MF_NO_LOOP_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

typedef uint32_t __attribute__((may_alias)) mf_word; /* copies any type */

MF_NO_LOOP_CALLS void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0u) {
        for (; n >= 4u; n -= 4u, d += 4, s += 4) {
            *(mf_word *)(void *)d = *(const mf_word *)(const void *)s;
        }
    }
    for (; n > 0u; --n) {
        *d++ = *s++;
    }
    return dst;
}

MF_NO_LOOP_CALLS void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = (unsigned char *)dst;
    for (; n > 0u; --n) {
        *d++ = (unsigned char)c;
    }
    return dst;
}
