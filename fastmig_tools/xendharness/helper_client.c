/*
 * The harness's xc_save and xc_restore binaries, as xend runs them.
 *
 * Xen's helpers are small C programs: once xc_save has written the
 * image's last byte it exits at once, and xend, which waits for that exit
 * before its next step, goes on.  The stand-in helpers are Python
 * (helpers.py); a Python process takes over a millisecond to exit here,
 * ten times a C one, and that time would sit between the image's end and
 * xend's next step on both hosts.  So this client is what xend forks: it
 * hands its name, its arguments, its stdin, stdout and stderr and the
 * image descriptor (its first argument) to the host's helper server
 * ($HARNESS_HV_DIR/helpers.sock, helpers.py --serve), which runs the
 * stand-in on them and closes them, and exits with the status the server
 * answers.  If the client dies (its xend was killed), the server stops
 * the helper's work, as the real helper would have died with it.
 *
 * Written for this harness; no Xen code.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_MESSAGE 8192
#define MAX_FDS 4

static const char *name = "helper";

static void fail(const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", name, what, strerror(errno));
    _exit(1);
}

int main(int argc, char **argv)
{
    const char *dir = getenv("HARNESS_HV_DIR");
    const char *slash = strrchr(argv[0], '/');
    struct sockaddr_un addr;
    char message[MAX_MESSAGE];
    size_t length = 0;
    int fds[MAX_FDS] = { 0, 1, 2, -1 };
    int nfds = 3, sock, i;
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } control;
    struct iovec iov;
    struct msghdr msg;
    struct cmsghdr *cmsg;
    unsigned char status;
    ssize_t n;

    name = slash ? slash + 1 : argv[0];
    if (dir == NULL) {
        errno = EINVAL;
        fail("HARNESS_HV_DIR is not set");
    }
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    if (snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/helpers.sock",
                 dir) >= (int)sizeof(addr.sun_path)) {
        errno = ENAMETOOLONG;
        fail("the helper server's socket path");
    }

    /* name NUL arg1 NUL arg2 NUL ... */
    for (i = 0; i < argc; i++) {
        const char *part = i == 0 ? name : argv[i];
        size_t size = strlen(part) + 1;
        if (length + size > sizeof(message)) {
            errno = E2BIG;
            fail("arguments");
        }
        memcpy(message + length, part, size);
        length += size;
    }
    if (argc > 1) {
        fds[3] = atoi(argv[1]);
        nfds = 4;
    }

    sock = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (sock < 0)
        fail("socket");
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        fail(addr.sun_path);

    memset(&msg, 0, sizeof(msg));
    memset(&control, 0, sizeof(control));
    iov.iov_base = message;
    iov.iov_len = length;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    while (sendmsg(sock, &msg, 0) < 0)
        if (errno != EINTR)
            fail("sending to the helper server");

    do
        n = read(sock, &status, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) {
        if (n == 0)
            errno = EPIPE;
        fail("the helper server gave no status");
    }
    _exit(status);
}
