/*
 * main.c - the kyso-milter daemon: options, config check (-n), privileges,
 * the socket, signals.
 *
 * libmilter owns SIGHUP, SIGTERM and SIGINT (SIGHUP would stop it), so the
 * daemon runs as two processes: a small supervisor that takes the signals,
 * forwards SIGHUP to the worker as SIGUSR1 (reload) and SIGTERM/SIGINT as
 * SIGTERM, and restarts a worker that died; and the worker, which opens the
 * tokens and the socket as root, drops to the configured user and runs
 * libmilter. A reload builds a new snapshot; a bad config is refused and the
 * old one stays.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "milter.h"

extern struct smfiDesc kyso_milter_desc;

/* EX_CONFIG: the worker could not start; restarting it would not help. */
#define EXIT_START_FAILED 78

static const char *config_path = "/etc/kyso/kyso.conf";

static void usage(FILE *f)
{
    fprintf(f, "usage: kyso-milter [-c CONFIG] [-f] [-n]\n"
               "  -c CONFIG  configuration file (default /etc/kyso/kyso.conf)\n"
               "  -f         stay in the foreground, log to stderr\n"
               "  -n         check configuration, keys, token login and trust store, then exit\n");
}

/* -n: everything a start would need, reported precisely. */
static int check_only(void)
{
    snapshot *s = NULL;
    char err[512];
    int bad;

    kyso_log_open("kyso-milter", 0, KYSO_LOG_INFO);
    if (snapshot_load(&s, config_path, err, sizeof(err)) != KYSO_OK) {
        fprintf(stderr, "kyso-milter: %s\n", err);
        return 1;
    }
    bad = snapshot_check_identities(s, 1);
    snapshot_install(s);
    snapshot_install(NULL);
    if (bad) {
        fprintf(stderr, "kyso-milter: %s: %d signing identit%s unusable\n", config_path, bad,
                bad == 1 ? "y" : "ies");
        return 1;
    }
    printf("configuration OK\n");
    return 0;
}

/* Every minute: refresh CRLs before they go stale, re-check our own
 * certificates (revoked, expired, expiring). */
static void *maintenance_thread(void *arg)
{
    for (;;) {
        snapshot *s;

        sleep(60);
        if ((s = snapshot_acquire()) == NULL)
            continue;
        snapshot_maintain(s);
        snapshot_release(s);
    }
    return NULL;
}

static void *reload_thread(void *arg)
{
    sigset_t set;
    int sig;

    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    for (;;) {
        snapshot *s = NULL;
        char err[512];

        if (sigwait(&set, &sig) != 0)
            continue;
        if (snapshot_load(&s, config_path, err, sizeof(err)) != KYSO_OK) {
            kyso_log(KYSO_LOG_ERR, NULL, "reload-refused", "error=\"%s\" keeping=previous", err);
            continue;
        }
        snapshot_check_identities(s, 0);
        snapshot_install(s);
        kyso_log(KYSO_LOG_INFO, NULL, "reloaded", "config=%s", config_path);
    }
    return NULL;
}

static int drop_privileges(const kyso_config *c)
{
    struct passwd *pw;
    struct group *gr = NULL;
    gid_t gid;

    if (c->milter.user[0] == '\0')
        return 0;
    if ((pw = getpwnam(c->milter.user)) == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "start-failed", "error=\"no such user\" user=%s",
                 c->milter.user);
        return -1;
    }
    gid = pw->pw_gid;
    if (c->milter.group[0] && (gr = getgrnam(c->milter.group)) == NULL) {
        kyso_log(KYSO_LOG_ERR, NULL, "start-failed", "error=\"no such group\" group=%s",
                 c->milter.group);
        return -1;
    }
    if (gr)
        gid = gr->gr_gid;
    /* Order matters: groups while still root, then gid, then uid. */
    if (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(pw->pw_uid) != 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "start-failed", "error=\"cannot drop privileges: %s\"",
                 strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        kyso_log(KYSO_LOG_ERR, NULL, "start-failed", "error=\"privileges not dropped\"");
        return -1;
    }
    return 0;
}

static int prepare_socket(const kyso_config *c)
{
    const char *sock = c->milter.socket;

    if (smfi_setconn((char *)sock) != MI_SUCCESS ||
        smfi_settimeout(c->milter.timeout) != MI_SUCCESS ||
        smfi_register(kyso_milter_desc) != MI_SUCCESS || smfi_opensocket(1) != MI_SUCCESS) {
        kyso_log(KYSO_LOG_ERR, NULL, "start-failed",
                 "error=\"cannot open milter socket\" socket=%s", sock);
        return -1;
    }
    if (strncmp(sock, "unix:", 5) == 0 || strncmp(sock, "local:", 6) == 0) {
        const char *path = strchr(sock, ':') + 1;

        if (chmod(path, (mode_t)c->milter.socket_mode) != 0) {
            kyso_log(KYSO_LOG_ERR, NULL, "start-failed", "error=\"chmod socket: %s\"",
                     strerror(errno));
            return -1;
        }
        if (c->milter.user[0]) {
            struct passwd *pw = getpwnam(c->milter.user);
            struct group *gr = c->milter.group[0] ? getgrnam(c->milter.group) : NULL;

            if (pw && chown(path, pw->pw_uid, gr ? gr->gr_gid : pw->pw_gid) != 0)
                kyso_log(KYSO_LOG_WARNING, NULL, "socket", "error=\"chown: %s\"", strerror(errno));
        }
    }
    return 0;
}

static int worker(int foreground)
{
    snapshot *s = NULL;
    char err[512];
    sigset_t set;
    pthread_t tid;
    int rc;

    /* SIGUSR1 reaches only the reload thread. */
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (snapshot_load(&s, config_path, err, sizeof(err)) != KYSO_OK) {
        kyso_log(KYSO_LOG_ERR, NULL, "start-failed", "error=\"%s\"", err);
        return EXIT_START_FAILED;
    }
    kyso_log_open("kyso-milter", !foreground, (kyso_log_level)s->conf->milter.log_level);
    /* Tokens are opened as root; a missing one is retried on demand. */
    snapshot_check_identities(s, 1);
    snapshot_install(s);
    s = snapshot_acquire();
    rc = prepare_socket(s->conf) == 0 && drop_privileges(s->conf) == 0;
    snapshot_release(s);
    if (!rc)
        return EXIT_START_FAILED;
    pthread_create(&tid, NULL, reload_thread, NULL);
    pthread_detach(tid);
    pthread_create(&tid, NULL, maintenance_thread, NULL);
    pthread_detach(tid);
    kyso_log(KYSO_LOG_INFO, NULL, "started", "config=%s pid=%ld", config_path, (long)getpid());
    rc = smfi_main() == MI_SUCCESS ? 0 : 1;
    kyso_log(KYSO_LOG_INFO, NULL, "stopped", "rc=%d", rc);
    return rc;
}

/* The supervisor: forwards signals, restarts a worker that died. */
static int supervise(int foreground)
{
    sigset_t set;
    pid_t child = -1;
    int sig, status = 0, stopping = 0;
    unsigned backoff = 0;
    time_t started = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        if (child < 0 && !stopping) {
            /* A worker that could not start (bad config, no socket) says so
             * with EXIT_START_FAILED: starting it again would change nothing.
             * One that crashed or failed later is restarted, with a growing
             * pause so a crash on every message does not spin; the pause
             * still answers SIGTERM. */
            if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_START_FAILED) {
                kyso_log(KYSO_LOG_ERR, NULL, "worker-failed", "status=start-failed giving-up=yes");
                return 1;
            }
            if (backoff) {
                struct timespec pause = {(time_t)backoff, 0};

                kyso_log(KYSO_LOG_ERR, NULL, "worker-restart", "in=%us", backoff);
                sig = sigtimedwait(&set, NULL, &pause);
                if (sig == SIGTERM || sig == SIGINT)
                    return 0;
            }
            backoff = backoff ? (backoff < 32 ? backoff * 2 : 60) : 1;
            started = time(NULL);
            if ((child = fork()) < 0)
                return 1;
            if (child == 0) {
                sigprocmask(SIG_UNBLOCK, &set, NULL);
                _exit(worker(foreground));
            }
        }
        if (sigwait(&set, &sig) != 0)
            continue;
        switch (sig) {
        case SIGHUP:
            if (child > 0)
                kill(child, SIGUSR1);
            break;
        case SIGTERM:
        case SIGINT:
            stopping = 1;
            if (child > 0)
                kill(child, SIGTERM);
            break;
        case SIGCHLD:
            while (child > 0 && waitpid(child, &status, WNOHANG) == child) {
                child = -1;
                if (stopping)
                    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
                kyso_log(KYSO_LOG_ERR, NULL, "worker-died", "status=%d restarting=yes", status);
                if (time(NULL) - started > 60)
                    backoff = 0; /* it had been running well: restart at once */
            }
            break;
        }
    }
}

int main(int argc, char **argv)
{
    int c, foreground = 0, check = 0;

    while ((c = getopt(argc, argv, "c:fnh")) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'f':
            foreground = 1;
            break;
        case 'n':
            check = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 64;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 64;
    }
    if (check)
        return check_only();
    kyso_log_open("kyso-milter", !foreground, KYSO_LOG_INFO);
    if (!foreground && daemon(0, 0) != 0) {
        perror("kyso-milter: daemon");
        return 1;
    }
    return supervise(foreground);
}
