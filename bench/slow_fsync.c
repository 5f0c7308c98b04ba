/* LD_PRELOAD shim for bench/gateway_ingest.py --fsync-ms: every fsync and
 * fdatasync first sleeps OUTPOST_BENCH_FSYNC_MS milliseconds, then syncs for
 * real. It makes this VM's cheap fsync behave like a Raspberry Pi's SD card,
 * where one flush takes milliseconds. Benchmarks only; never in production. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void delay(void) {
    const char *ms = getenv("OUTPOST_BENCH_FSYNC_MS");
    long v = ms ? atol(ms) : 0;
    if (v > 0) {
        struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int) = 0;
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    delay();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = 0;
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    delay();
    return real(fd);
}
