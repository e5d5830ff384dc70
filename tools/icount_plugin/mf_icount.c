/*
 * mf_icount: a QEMU TCG plugin that counts executed guest instructions
 * exactly, and snapshots the count each time the guest executes a marker
 * instruction.
 *
 *   qemu-system-arm ... -plugin mf_icount.so,mark=0x1234,out=counts.txt
 *
 * Every translation block adds its instruction count to a counter when it
 * starts executing (an inline add, nearly free). The marker instruction
 * (e.g. the first instruction of a no-op function the firmware calls) gets a
 * callback which records how many instructions ran before it: the counter
 * minus the instructions of its block that have not run yet. The difference
 * of two snapshots is the exact number of instructions executed between two
 * calls of the marker, including the marker function's own instructions of
 * the first call and the call instruction of the second.
 *
 * A block is counted when it starts, so a block abandoned half way (a fault
 * in its middle, or an I/O access replayed under -icount) would be counted
 * twice: measure code without faults and run QEMU without -icount.
 *
 * Output, written to `out` (default stderr) at exit: one line per marker hit,
 * "mark N", then "total N" (every instruction executed). With profile=on,
 * also "tb ADDR N" per translation block start address: the instructions
 * executed in blocks starting there (a profile by address, which
 * microfit.icount attributes to functions).
 *
 * Debian's QEMU 7.2 exports the plugin API (version 1) but ships no header:
 * the few declarations used are written out below, as qemu-plugin.h has them.
 * Build: gcc -O2 -shared -fPIC -o mf_icount.so mf_icount.c
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- QEMU plugin API, version 1 (QEMU 5.2 .. 8.1) ---------------------- */

#define QEMU_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;

typedef struct qemu_info_t {
    const char *target_name;
    struct {
        int min;
        int cur;
    } version;
    bool system_emulation;
    union {
        struct {
            int smp_vcpus;
            int max_vcpus;
        } system;
    };
} qemu_info_t;

struct qemu_plugin_tb;
struct qemu_plugin_insn;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                              void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

QEMU_PLUGIN_EXPORT int qemu_plugin_version = 1;

/* ---- the counter --------------------------------------------------------- */

/* One vCPU (Cortex-M): no atomics needed. */
static uint64_t executed;
static bool out_of_memory;
static uint64_t mark_addr = UINT64_MAX;
static uint64_t *marks;
static size_t n_marks, cap_marks;
static const char *out_path;

/* Profile: instructions per block start address, in an open-addressing table. */
typedef struct {
    uint64_t vaddr;
    uint64_t count;
} tb_slot;
static bool profile;
static tb_slot *slots;
static size_t n_slots, cap_slots;

static size_t slot_index(uint64_t vaddr, size_t cap)
{
    return (size_t)((vaddr * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

/* The slot of a block address. Slots never move once handed out (the
 * inline adds hold their address), so the table is sized once, generously. */
static uint64_t *profile_slot(uint64_t vaddr)
{
    size_t i;
    if (slots == NULL) {
        cap_slots = (size_t)1 << 20;
        slots = calloc(cap_slots, sizeof *slots);
        if (slots == NULL) {
            out_of_memory = true;
            return NULL;
        }
    }
    for (i = slot_index(vaddr, cap_slots);; i = (i + 1) & (cap_slots - 1)) {
        if (slots[i].vaddr == vaddr + 1) {
            return &slots[i].count;
        }
        if (slots[i].vaddr == 0) {
            if (2 * (n_slots + 1) > cap_slots) {
                out_of_memory = true;
                return NULL;
            }
            slots[i].vaddr = vaddr + 1; /* 0 marks a free slot */
            ++n_slots;
            return &slots[i].count;
        }
    }
}

/* userdata: instructions of the marker's block from the marker to the end,
 * already added to `executed` when the callback runs. */
static void on_mark(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    if (n_marks == cap_marks) {
        size_t cap = cap_marks ? 2 * cap_marks : 1024;
        uint64_t *grown = realloc(marks, cap * sizeof *marks);
        if (grown == NULL) {
            out_of_memory = true;
            return;
        }
        marks = grown;
        cap_marks = cap;
    }
    marks[n_marks++] = executed - (uint64_t)(uintptr_t)userdata;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    size_t i;
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, n);
    if (profile && n > 0) {
        uint64_t *slot = profile_slot(qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, 0)));
        if (slot != NULL) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, slot, n);
        }
    }
    for (i = 0; i < n; ++i) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (qemu_plugin_insn_vaddr(insn) == mark_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS,
                                                   (void *)(uintptr_t)(n - i));
        }
    }
}

static void on_atexit(qemu_plugin_id_t id, void *userdata)
{
    FILE *f = out_path != NULL ? fopen(out_path, "w") : stderr;
    size_t i;
    (void)id;
    (void)userdata;
    if (f == NULL) {
        fprintf(stderr, "mf_icount: cannot write %s\n", out_path);
        return;
    }
    for (i = 0; i < n_marks; ++i) {
        fprintf(f, "mark %llu\n", (unsigned long long)marks[i]);
    }
    if (out_of_memory) {
        fprintf(f, "error out of memory: marks or profile lost\n");
    }
    for (i = 0; i < cap_slots; ++i) {
        if (slots[i].vaddr != 0 && slots[i].count != 0) {
            fprintf(f, "tb 0x%llx %llu\n", (unsigned long long)(slots[i].vaddr - 1),
                    (unsigned long long)slots[i].count);
        }
    }
    fprintf(f, "total %llu\n", (unsigned long long)executed);
    if (f != stderr) {
        fclose(f);
    }
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; ++i) {
        const char *a = argv[i];
        if (strncmp(a, "mark=", 5) == 0) {
            char *end;
            mark_addr = strtoull(a + 5, &end, 0);
            if (*end != '\0') {
                fprintf(stderr, "mf_icount: bad address in %s\n", a);
                return -1;
            }
        } else if (strncmp(a, "out=", 4) == 0) {
            out_path = a + 4;
        } else if (strcmp(a, "profile=on") == 0) {
            profile = true;
        } else {
            fprintf(stderr, "mf_icount: unknown argument %s (want mark=ADDR, out=FILE, "
                            "profile=on)\n", a);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_atexit, NULL);
    return 0;
}
