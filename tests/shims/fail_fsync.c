/*
 * fail_fsync.c: an LD_PRELOAD shim that makes fsync(2) and fdatasync(2) fail with EIO while a
 * trigger file exists, so tests can give a real node process a disk whose flushes fail. tmpfs never
 * fails an fsync, and production code must carry no hook for it: this shim is the whole mechanism.
 *
 * The trigger's path comes from the environment variable LIKES_TEST_FAIL_FSYNC (read once, at load);
 * unset or empty, the shim only passes calls through. Built at test time by bench/disk.py:
 *     gcc -shared -fPIC -O2 -Wall -Werror -o libfailfsync.so fail_fsync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char trigger[PATH_MAX];
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

__attribute__((constructor)) static void load(void) {
    const char *path = getenv("LIKES_TEST_FAIL_FSYNC");
    if (path != NULL && strlen(path) < sizeof trigger) {
        strcpy(trigger, path);
    }
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
}

/* Whether flushes fail right now: the trigger file exists. Leaves errno as it found it. */
static int tripped(void) {
    if (trigger[0] == '\0') {
        return 0;
    }
    int saved = errno;
    int exists = access(trigger, F_OK) == 0;
    errno = saved;
    return exists;
}

int fsync(int fd) {
    if (tripped()) {
        errno = EIO;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    if (tripped()) {
        errno = EIO;
        return -1;
    }
    return real_fdatasync(fd);
}
