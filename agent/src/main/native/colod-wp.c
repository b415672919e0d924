/*
 * libcolodwp.so: loaded into QEMU with LD_PRELOAD by colod (the only native code of colod).
 *
 * Why it must run inside QEMU: a userfaultfd can only register ranges of its own process. When QEMU maps the
 * guest's RAM file (shared, writable), this library registers that range with a userfaultfd in asynchronous
 * write-protect mode and write-protects it. From then on the kernel marks every page the guest writes, and
 * colod — another process — reads and re-arms those marks with ioctl(PAGEMAP_SCAN) on /proc/<qemu>/pagemap.
 * Asynchronous mode resolves write faults in the kernel: no thread here, no message to read, QEMU never waits.
 *
 * ABI with colod (docs/ARCHITECTURE.md, "Write tracking"):
 *   COLOD_WP_FILE    path of the RAM file; the first MAP_SHARED + PROT_WRITE mapping of it is tracked
 *   COLOD_WP_STATUS  file this library writes once that mapping was seen, one line:
 *                      "ok <start address, hex> <length, bytes>"
 *                      "error <step>: <errno text>"   (step: userfaultfd, UFFDIO_API, UFFDIO_REGISTER, ...)
 * Without COLOD_WP_FILE it does nothing. The userfaultfd stays open for QEMU's life (closing it would end the
 * tracking).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* Newer than Debian 12's headers; values from the kernel's include/uapi/linux/userfaultfd.h */
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

static int done;

static void report(const char *line)
{
    const char *path = getenv("COLOD_WP_STATUS");
    if (path == NULL)
    {
        return;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0)
    {
        ssize_t ignored = write(fd, line, strlen(line));
        (void)ignored;
        close(fd);
    }
}

static void fail(const char *step)
{
    char line[256];
    snprintf(line, sizeof line, "error %s: %s\n", step, strerror(errno));
    report(line);
}

/* Is fd the file named by COLOD_WP_FILE? */
static int is_ram_file(int fd)
{
    const char *want = getenv("COLOD_WP_FILE");
    char link[64];
    char path[PATH_MAX];
    if (want == NULL || fd < 0)
    {
        return 0;
    }
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0)
    {
        return 0;
    }
    path[n] = 0;
    return strcmp(path, want) == 0;
}

static void track(void *start, size_t len)
{
    done = 1;
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0)
    {
        fail("userfaultfd");
        return;
    }
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
    };
    if (ioctl(uffd, UFFDIO_API, &api) != 0)
    {
        fail("UFFDIO_API (async write-protect needs Linux 6.7+)");
        close(uffd);
        return;
    }
    struct uffdio_register reg = {
        .range = {.start = (unsigned long)start, .len = len},
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
    {
        fail("UFFDIO_REGISTER (write-protect of a shared file mapping)");
        close(uffd);
        return;
    }
    struct uffdio_writeprotect wp = {
        .range = {.start = (unsigned long)start, .len = len},
        .mode = UFFDIO_WRITEPROTECT_MODE_WP,
    };
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
    {
        fail("UFFDIO_WRITEPROTECT");
        close(uffd);
        return;
    }
    char line[128];
    snprintf(line, sizeof line, "ok %lx %zu\n", (unsigned long)start, len);
    report(line);
}

static void *wrapped(mmap_fn *real, const char *name, void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (*real == NULL)
    {
        *real = (mmap_fn)dlsym(RTLD_NEXT, name);
    }
    void *p = (*real)(addr, len, prot, flags, fd, off);
    if (!done && p != MAP_FAILED && (flags & MAP_SHARED) && (prot & PROT_WRITE) && is_ram_file(fd))
    {
        int saved = errno;
        track(p, len);
        errno = saved;
    }
    return p;
}

static mmap_fn real_mmap;
static mmap_fn real_mmap64;

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return wrapped(&real_mmap, "mmap", addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    return wrapped(&real_mmap64, "mmap64", addr, len, prot, flags, fd, off);
}
