/*
 * EEMBC / MLPerf Tiny test-harness mode: the firmware answers the ASCII
 * commands of the benchmark's host runner instead of microfit's binary
 * protocol, so the benchmark's own tools can drive a microfit model.
 *
 * Selected at build time with -DMF_HARNESS_EEMBC=1 (mf_proto_run() then
 * serves this harness). See docs/protocol.md, "EEMBC / MLPerf Tiny mode".
 */
#ifndef MF_EEMBC_H
#define MF_EEMBC_H

#ifndef MF_HARNESS_EEMBC
#define MF_HARNESS_EEMBC 0
#endif

/* The benchmark id reported by `profile%` (kws01, vww01, ic01, ad01 in
 * MLPerf Tiny); the runner keys its tests on it. */
#ifndef MF_EEMBC_MODEL_ID
#define MF_EEMBC_MODEL_ID "microfit"
#endif

/* Print the boot banner, then answer runner commands forever. */
void mf_eembc_run(void);

#endif /* MF_EEMBC_H */
