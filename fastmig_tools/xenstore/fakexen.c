/*
 * fakexen.c - an LD_PRELOAD stand-in for the hypervisor, for Xen 4.17's
 * C xenstored (Debian bookworm's xen-utils-4.17).
 *
 * Why: our integration tests want the real daemon (its ordering, watch,
 * transaction and error behaviour), but test machines have no Xen.  The
 * daemon refuses to start without a hypervisor, and with --no-domain-init it
 * crashes on the first request because the store's root belongs to dom0.
 * Preloading this library makes every hypervisor interface the daemon calls
 * answer as a quiet, healthy dom0 would:
 *
 *   - libxenctrl: xc_interface_open/close, and xc_domain_getinfo reporting
 *     the asked domain as existing and running.  So permission sets naming
 *     any domid stay valid, and no domain is ever seen dying: the daemon
 *     never fires @releaseDomain by itself.
 *   - libxenevtchn: handles whose fd is a pipe that never becomes readable
 *     (we keep its write end open so poll() never reports POLLHUP, which
 *     the daemon treats as fatal); binds hand out fresh port numbers.
 *   - libxengnttab: a "grant mapping" is a private zeroed page, i.e. a ring
 *     on which no guest ever writes a request.  While the file
 *     $FASTMIG_FAKEXEN_FAULTS/refuse-grant-map exists, mappings fail with
 *     EINVAL instead, as Linux's gntdev answers when Xen refuses the map of
 *     a domain's store page: xenstored then answers XS_INTRODUCE with that
 *     error, so a test can make a host's introduce of a new domain fail
 *     (what a bad store page or port does on a real dom0).  Only the
 *     introduce of a domain xenstored does not know yet maps its page;
 *     dom0's ring comes from xsd_kva.
 *   - open("/proc/xen/xsd_port") gives a memfd holding "1";
 *     open("/proc/xen/xsd_kva") gives a one-page memfd that the daemon
 *     mmaps as dom0's (forever empty) ring.
 *
 * Every client is therefore dom0 over the unix socket.  Only the calls
 * xenstored 4.17 imports are provided (`nm -D --undefined-only xenstored`);
 * signatures and the xc_dominfo_t prefix follow Xen 4.17's
 * tools/include/{xenctrl,xenevtchn,xengnttab}.h.  This file includes no Xen
 * header so it builds with nothing but libc.
 *
 * Build: scripts/install-xenstored (gcc -shared -fPIC ... -ldl).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* Xen's public constants we depend on (xen/include/public/xen.h). */
#define FAKEXEN_DOMID_FIRST_RESERVED 0x7FF0U
#define FAKEXEN_XSD_PORT_PATH "/proc/xen/xsd_port"
#define FAKEXEN_XSD_KVA_PATH "/proc/xen/xsd_kva"
#define FAKEXEN_XSD_PORT_TEXT "1"

/* Fault injection (see the libxengnttab note above). */
#define FAKEXEN_FAULTS_ENV "FASTMIG_FAKEXEN_FAULTS"
#define FAKEXEN_REFUSE_GRANT_MAP "refuse-grant-map"

/* ------------------------------------------------------------------ */
/* libxenctrl                                                          */
/* ------------------------------------------------------------------ */

/*
 * The leading fields of 4.17's xc_dominfo_t.  The caller's struct is larger
 * (nr_pages, handle, arch_config, ...); we write only this prefix, which
 * holds everything xenstored reads (domid, dying, crashed, shutdown).  The
 * bitfield declaration is copied in shape so the compiler lays the flag
 * bits out exactly as it does for the real struct.
 */
struct fakexen_dominfo_prefix {
    uint32_t domid;
    uint32_t ssidref;
    unsigned int dying:1, crashed:1, shutdown:1,
                 paused:1, blocked:1, running:1,
                 hvm:1, debugged:1, xenstore:1, hap:1;
    unsigned int shutdown_reason;
};

struct fakexen_xc {
    int magic;
};

EXPORT void *xc_interface_open(void *logger, void *dombuild_logger,
                               unsigned open_flags)
{
    struct fakexen_xc *xch;

    (void)logger; (void)dombuild_logger; (void)open_flags;
    xch = calloc(1, sizeof(*xch));
    if (xch)
        xch->magic = 0x58430000;
    return xch;
}

EXPORT int xc_interface_close(void *xch)
{
    free(xch);
    return 0;
}

EXPORT int xc_domain_getinfo(void *xch, uint32_t first_domid,
                             unsigned int max_doms, void *info)
{
    struct fakexen_dominfo_prefix *d = info;

    (void)xch;
    if (max_doms == 0 || info == NULL)
        return 0;
    /* Like Xen: no domain at or beyond the reserved range. */
    if (first_domid >= FAKEXEN_DOMID_FIRST_RESERVED)
        return 0;
    memset(d, 0, sizeof(*d));
    d->domid = first_domid;
    d->running = 1;
    return 1;
}

/* ------------------------------------------------------------------ */
/* libxenevtchn                                                        */
/* ------------------------------------------------------------------ */

struct fakexen_evtchn {
    int rfd;            /* what xenevtchn_fd() returns; never readable */
    int wfd;            /* held open only so rfd never reports POLLHUP */
    int next_port;
};

static struct fakexen_evtchn *evtchn_new(int rfd, int wfd)
{
    struct fakexen_evtchn *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->rfd = rfd;
    h->wfd = wfd;
    /* Port 1 is dom0's store port (xsd_port); start elsewhere. */
    h->next_port = 10;
    return h;
}

EXPORT void *xenevtchn_open(void *logger, unsigned int flags)
{
    int fds[2];
    struct fakexen_evtchn *h;
    /* XENEVTCHN_NO_CLOEXEC is bit 0: honour it as libxenevtchn does. */
    int pflags = (flags & 1U) ? 0 : O_CLOEXEC;

    (void)logger;
    if (pipe2(fds, pflags) < 0)
        return NULL;
    h = evtchn_new(fds[0], fds[1]);
    if (!h) {
        close(fds[0]);
        close(fds[1]);
        errno = ENOMEM;
    }
    return h;
}

/* Used by xenstored's live update to adopt an inherited event channel fd. */
EXPORT void *xenevtchn_fdopen(void *logger, int fd, unsigned open_flags)
{
    (void)logger; (void)open_flags;
    return evtchn_new(fd, -1);
}

EXPORT int xenevtchn_close(void *xce)
{
    struct fakexen_evtchn *h = xce;

    if (!h)
        return 0;
    if (h->rfd >= 0)
        close(h->rfd);
    if (h->wfd >= 0)
        close(h->wfd);
    free(h);
    return 0;
}

EXPORT int xenevtchn_fd(void *xce)
{
    return ((struct fakexen_evtchn *)xce)->rfd;
}

EXPORT int xenevtchn_notify(void *xce, uint32_t port)
{
    (void)xce; (void)port;
    return 0;
}

EXPORT int xenevtchn_bind_interdomain(void *xce, uint32_t domid,
                                      uint32_t remote_port)
{
    (void)domid; (void)remote_port;
    return ((struct fakexen_evtchn *)xce)->next_port++;
}

EXPORT int xenevtchn_bind_virq(void *xce, unsigned int virq)
{
    (void)virq;
    return ((struct fakexen_evtchn *)xce)->next_port++;
}

EXPORT int xenevtchn_unbind(void *xce, uint32_t port)
{
    (void)xce; (void)port;
    return 0;
}

/* Only called when the fd is readable, which ours never is. */
EXPORT int xenevtchn_pending(void *xce)
{
    (void)xce;
    errno = EAGAIN;
    return -1;
}

EXPORT int xenevtchn_unmask(void *xce, uint32_t port)
{
    (void)xce; (void)port;
    return 0;
}

/* ------------------------------------------------------------------ */
/* libxengnttab                                                        */
/* ------------------------------------------------------------------ */

struct fakexen_gnttab {
    int magic;
};

EXPORT void *xengnttab_open(void *logger, unsigned open_flags)
{
    struct fakexen_gnttab *h;

    (void)logger; (void)open_flags;
    h = calloc(1, sizeof(*h));
    if (h)
        h->magic = 0x47540000;
    return h;
}

EXPORT int xengnttab_close(void *xgt)
{
    free(xgt);
    return 0;
}

EXPORT int xengnttab_set_max_grants(void *xgt, uint32_t nr_grants)
{
    (void)xgt; (void)nr_grants;
    return 0;
}

/* Read at each call, so a test arms and disarms the fault on a running
 * daemon by creating and removing the file. */
static int fault_armed(const char *name)
{
    const char *dir = getenv(FAKEXEN_FAULTS_ENV);
    char path[4096];
    int n;

    if (!dir || !*dir)
        return 0;
    n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return 0;
    return access(path, F_OK) == 0;
}

EXPORT void *xengnttab_map_grant_ref(void *xgt, uint32_t domid,
                                     uint32_t ref, int prot)
{
    void *p;

    (void)xgt; (void)domid; (void)ref;
    if (fault_armed(FAKEXEN_REFUSE_GRANT_MAP)) {
        errno = EINVAL;
        return NULL;
    }
    p = mmap(NULL, (size_t)getpagesize(), prot | PROT_READ,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

EXPORT int xengnttab_unmap(void *xgt, void *start_address, uint32_t count)
{
    (void)xgt;
    return munmap(start_address, (size_t)count * (size_t)getpagesize());
}

/* ------------------------------------------------------------------ */
/* open() of the dom0 store devices                                    */
/* ------------------------------------------------------------------ */

static int memfd_with(const char *name, const void *data, size_t len,
                      size_t size)
{
    int fd = memfd_create(name, MFD_CLOEXEC);

    if (fd < 0)
        return -1;
    if ((size && ftruncate(fd, (off_t)size) < 0) ||
        (len && write(fd, data, len) != (ssize_t)len) ||
        lseek(fd, 0, SEEK_SET) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return -1;
    }
    return fd;
}

static int fake_store_dev(const char *path)
{
    if (strcmp(path, FAKEXEN_XSD_PORT_PATH) == 0)
        return memfd_with("fakexen-xsd_port", FAKEXEN_XSD_PORT_TEXT,
                          strlen(FAKEXEN_XSD_PORT_TEXT), 0);
    if (strcmp(path, FAKEXEN_XSD_KVA_PATH) == 0)
        return memfd_with("fakexen-xsd_kva", NULL, 0,
                          (size_t)getpagesize());
    return -2;
}

typedef int (*open_fn)(const char *, int, ...);

static int forward_open(const char *sym, const char *path, int flags,
                        mode_t mode)
{
    open_fn real = (open_fn)dlsym(RTLD_NEXT, sym);

    if (!real) {
        errno = ENOSYS;
        return -1;
    }
    return real(path, flags, mode);
}

static mode_t open_mode(int flags, va_list ap)
{
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
        return (mode_t)va_arg(ap, int);
    return 0;
}

EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    mode_t mode;
    int fd;

    va_start(ap, flags);
    mode = open_mode(flags, ap);
    va_end(ap);
    if ((fd = fake_store_dev(path)) != -2)
        return fd;
    return forward_open("open", path, flags, mode);
}

EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    mode_t mode;
    int fd;

    va_start(ap, flags);
    mode = open_mode(flags, ap);
    va_end(ap);
    if ((fd = fake_store_dev(path)) != -2)
        return fd;
    return forward_open("open64", path, flags, mode);
}
