/*
 * program.c — see program.h: the self-pipe signal handling, the ipc-endpoint check and the
 * duration options that coregroupd, cg-busd and cg-watch share. One self-pipe per process: the
 * handlers only set a flag and write one byte (a full pipe means a wake-up is already pending), so
 * every action happens in the program's own poll loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "program.h"

volatile sig_atomic_t cg_prog__stop_signal, cg_prog__usr1, cg_prog__hup;
static int wake_pipe[2] = {-1, -1};

void cg_prog__wake(void)
{
    char c = 1;
    if (write(wake_pipe[1], &c, 1) < 0) {
        /* pipe full: a wake-up is already pending */
    }
}

static void on_signal(int sig)
{
    int saved = errno;
    if (sig == SIGUSR1)
        cg_prog__usr1 = 1;
    else if (sig == SIGHUP)
        cg_prog__hup = 1;
    else
        cg_prog__stop_signal = sig;
    cg_prog__wake();
    errno = saved;
}

int cg_prog__signals(int want_usr1, int want_hup)
{
    struct sigaction sa;
    int i;
    if (pipe(wake_pipe) < 0)
        return -1;
    for (i = 0; i < 2; i++) {
        fcntl(wake_pipe[i], F_SETFL, fcntl(wake_pipe[i], F_GETFL) | O_NONBLOCK);
        fcntl(wake_pipe[i], F_SETFD, FD_CLOEXEC);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0 ||
        (want_usr1 && sigaction(SIGUSR1, &sa, NULL) < 0) ||
        (want_hup && sigaction(SIGHUP, &sa, NULL) < 0))
        return -1;
    signal(SIGPIPE, SIG_IGN);
    return wake_pipe[0];
}

void cg_prog__drain(void)
{
    char buf[64];
    while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
        ;
}

int cg_prog__ipc_in_use(const char *endpoint)
{
    struct sockaddr_un sa;
    const char *path = endpoint + 6;
    int fd, live;
    if (strncmp(endpoint, "ipc://", 6) != 0 || path[0] == '@' || path[0] == '*' ||
        strlen(path) >= sizeof(sa.sun_path))
        return 0;
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0)
        return 0;
    live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return live;
}

int cg_prog__parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || !isfinite(v) || v < 0.001 || v > 31536000.0)
        return -1;
    *out = v;
    return 0;
}
