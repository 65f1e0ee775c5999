/*
 * measure: run a VMM, time it from fork() to the guest's "/init is running" line, and report
 * the VMM process's peak RSS. Built statically by scripts/bench-boot (gcc -O2 -static) so
 * that it runs unchanged in the KVM lab's L1 (busybox only) and on a bare-metal host.
 *
 * Usage: measure [--label NAME] [--run N] [--timeout S] [--marker TEXT] [--log FILE]
 *                -- CMD [ARGS...]
 *
 * The command runs with stdin on /dev/null and its stdout and stderr on two pipes; both are
 * copied to FILE (default /dev/null) as they arrive. CLOCK_MONOTONIC is read just before
 * fork(); "init" is the moment the first read() that completes the marker on stdout
 * (default "@@GUEST-UP") returns. When the marker is followed by a number (the guest
 * init's "@@GUEST-UP <uptime>@@") that number is reported as guest_up_s: the guest
 * kernel's own uptime at that point. The peak RSS is wait4()'s ru_maxrss (kB): the peak
 * resident set of the child process itself (QEMU or pv-vmm, after exec).
 *
 * When the timeout passes the command's process group gets SIGKILL and the run is a
 * failure. One result line goes to stdout:
 *
 *   @@RUN vmm=NAME run=N result=ok init_s=2.345678 exit_s=3.456789 guest_up_s=1.23
 *         maxrss_kb=12345 exit=0@@                                  (one line)
 *   @@RUN vmm=NAME run=N result=fail reason=REASON init_s=- ... exit=...@@
 *
 * REASON: timeout, no-guest-up (exited without the marker), exit-status (non-zero exit
 * or killed by a signal after the marker), exec-failed. Missing values are '-'; exit is
 * the status, 'sig<N>' when the command was killed by a signal, '-' if never reaped.
 * Exit status of measure: 0 for result=ok, 1 for a failed run, 2 for a usage or system
 * error (no result line then).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_KEEP 4096

static void die(const char *fmt, ...)
{
	va_list ap;
	fputs("measure: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static double now_s(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		die("clock_gettime: %s", strerror(errno));
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
	fputs("Usage: measure [--label NAME] [--run N] [--timeout S] [--marker TEXT] [--log FILE]\n"
	      "               -- CMD [ARGS...]\n"
	      "Runs CMD (stdin /dev/null, stdout+stderr copied to FILE), times fork() to the first\n"
	      "stdout line containing TEXT (default @@GUEST-UP), waits for the exit and prints\n"
	      "'@@RUN vmm=NAME run=N result=ok|fail ... init_s= exit_s= guest_up_s= maxrss_kb= exit=@@'.\n"
	      "Defaults: --label vmm, --run 1, --timeout 120, --log /dev/null.\n",
	      f);
}

/* Write all of buf to fd (the log); a failing log is a system error. */
static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("writing the log: %s", strerror(errno));
		}
		buf += n;
		len -= (size_t)n;
	}
}

struct scan {
	const char *marker;
	char line[LINE_MAX_KEEP + 1];
	size_t len;
	int found;        /* marker seen */
	int want_number;  /* marker seen, its line not complete yet */
	double t_found;
	char guest_up[32];
};

/* Feed stdout bytes read at time t: detect the marker (possibly split across reads). */
static void scan_feed(struct scan *s, const char *buf, size_t n, double t)
{
	for (size_t i = 0; i < n; i++) {
		char c = buf[i];
		int eol = (c == '\n');
		if (!eol && c != '\r' && s->len < LINE_MAX_KEEP)
			s->line[s->len++] = c;
		s->line[s->len] = '\0';
		if (!s->found && strstr(s->line, s->marker) != NULL) {
			/* The read that completed the marker returned at t. */
			s->found = 1;
			s->want_number = 1;
			s->t_found = t;
		}
		if (eol) {
			if (s->want_number) {
				const char *p = strstr(s->line, s->marker);
				p = p ? p + strlen(s->marker) : s->line;
				while (*p == ' ')
					p++;
				size_t k = 0;
				while (k + 1 < sizeof s->guest_up &&
				       ((p[k] >= '0' && p[k] <= '9') || p[k] == '.')) {
					s->guest_up[k] = p[k];
					k++;
				}
				s->guest_up[k] = '\0';
				s->want_number = 0;
			}
			s->len = 0;
			s->line[0] = '\0';
		}
	}
}

int main(int argc, char **argv)
{
	const char *label = "vmm", *run = "1", *marker = "@@GUEST-UP", *logpath = "/dev/null";
	double timeout = 120.0;
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (i + 1 >= argc) {
			usage(stderr);
			die("%s needs a value (or unknown argument)", a);
		}
		if (strcmp(a, "--label") == 0)
			label = argv[++i];
		else if (strcmp(a, "--run") == 0)
			run = argv[++i];
		else if (strcmp(a, "--marker") == 0)
			marker = argv[++i];
		else if (strcmp(a, "--log") == 0)
			logpath = argv[++i];
		else if (strcmp(a, "--timeout") == 0) {
			char *end;
			timeout = strtod(argv[++i], &end);
			if (*end != '\0' || timeout <= 0)
				die("--timeout: not a positive number of seconds: %s", argv[i]);
		} else {
			usage(stderr);
			die("unknown argument: %s", a);
		}
	}
	if (i >= argc) {
		usage(stderr);
		die("no command given (put it after --)");
	}
	if (marker[0] == '\0')
		die("--marker must not be empty");
	char **cmd = &argv[i];

	int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (logfd < 0)
		die("%s: %s", logpath, strerror(errno));
	int out[2], err[2], ex[2];
	if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0 || pipe2(ex, O_CLOEXEC) != 0)
		die("pipe: %s", strerror(errno));
	fflush(NULL);

	double t0 = now_s();
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		/* Own process group, so a timeout kills everything the VMM started. */
		setpgid(0, 0);
		int devnull = open("/dev/null", O_RDONLY);
		if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
			_exit(127);
		signal(SIGPIPE, SIG_DFL);
		execvp(cmd[0], cmd);
		int e = errno;
		if (write(ex[1], &e, sizeof e) < 0) {
			/* nothing more we can do */
		}
		_exit(127);
	}
	setpgid(pid, pid); /* also from here, to avoid the race with kill(-pid) */
	close(out[1]);
	close(err[1]);
	close(ex[1]);

	int exec_errno = 0;
	if (read(ex[0], &exec_errno, sizeof exec_errno) != (ssize_t)sizeof exec_errno)
		exec_errno = 0; /* EOF: exec succeeded (the pipe closed on exec) */
	close(ex[0]);

	struct scan sc;
	memset(&sc, 0, sizeof sc);
	sc.marker = marker;
	struct pollfd pfd[2] = { { .fd = out[0], .events = POLLIN }, { .fd = err[0], .events = POLLIN } };
	int open_fds = 2;
	int reaped = 0, timed_out = 0, status = 0;
	struct rusage ru;
	memset(&ru, 0, sizeof ru);
	double t_exit = -1, deadline = t0 + timeout;
	char buf[65536];

	for (;;) {
		double t = now_s();
		if (t >= deadline) {
			timed_out = 1;
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			break;
		}
		if (open_fds == 0) {
			/* Output closed: the child is exiting (or left a grandchild behind). */
			pid_t r = wait4(pid, &status, WNOHANG, &ru);
			if (r == pid) {
				reaped = 1;
				t_exit = now_s();
				break;
			}
			if (r < 0 && errno != EINTR)
				die("wait4: %s", strerror(errno));
			struct timespec ms = { 0, 1000000 };
			nanosleep(&ms, NULL);
			continue;
		}
		int wait_ms = (int)((deadline - t) * 1000.0) + 1;
		if (wait_ms > 200)
			wait_ms = 200;
		int n = poll(pfd, 2, wait_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		for (int k = 0; k < 2; k++) {
			if (pfd[k].fd < 0 || !(pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t got = read(pfd[k].fd, buf, sizeof buf);
			double tr = now_s();
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				close(pfd[k].fd);
				pfd[k].fd = -1;
				open_fds--;
				continue;
			}
			if (k == 0)
				scan_feed(&sc, buf, (size_t)got, tr);
			write_all(logfd, buf, (size_t)got);
		}
		if (open_fds > 0 && !reaped) {
			/* A child that exits while a grandchild keeps the pipes open. */
			pid_t r = wait4(pid, &status, WNOHANG, &ru);
			if (r == pid) {
				reaped = 1;
				t_exit = now_s();
				/* Drain what is already buffered, without waiting for EOF. */
				for (int k = 0; k < 2; k++) {
					if (pfd[k].fd < 0)
						continue;
					fcntl(pfd[k].fd, F_SETFL, O_NONBLOCK);
					ssize_t got;
					while ((got = read(pfd[k].fd, buf, sizeof buf)) > 0) {
						if (k == 0)
							scan_feed(&sc, buf, (size_t)got, now_s());
						write_all(logfd, buf, (size_t)got);
					}
				}
				break;
			}
		}
	}
	if (timed_out) {
		/* Reap the killed child: its rusage is still its own peak. */
		for (;;) {
			pid_t r = wait4(pid, &status, 0, &ru);
			if (r == pid) {
				reaped = 1;
				break;
			}
			if (r < 0 && errno != EINTR)
				break;
		}
	}
	close(logfd);

	char exit_txt[32] = "-";
	int exit_ok = 0;
	if (reaped) {
		if (WIFEXITED(status)) {
			snprintf(exit_txt, sizeof exit_txt, "%d", WEXITSTATUS(status));
			exit_ok = WEXITSTATUS(status) == 0;
		} else if (WIFSIGNALED(status)) {
			snprintf(exit_txt, sizeof exit_txt, "sig%d", WTERMSIG(status));
		}
	}
	const char *reason = NULL;
	if (exec_errno != 0)
		reason = "exec-failed";
	else if (timed_out)
		reason = "timeout";
	else if (!sc.found)
		reason = "no-guest-up";
	else if (!exit_ok)
		reason = "exit-status";

	char init_txt[32] = "-", exit_s_txt[32] = "-", rss_txt[32] = "-";
	if (sc.found)
		snprintf(init_txt, sizeof init_txt, "%.6f", sc.t_found - t0);
	if (t_exit >= 0)
		snprintf(exit_s_txt, sizeof exit_s_txt, "%.6f", t_exit - t0);
	if (reaped)
		snprintf(rss_txt, sizeof rss_txt, "%ld", ru.ru_maxrss);
	if (exec_errno != 0)
		fprintf(stderr, "measure: cannot execute %s: %s\n", cmd[0], strerror(exec_errno));

	printf("@@RUN vmm=%s run=%s result=%s", label, run, reason ? "fail" : "ok");
	if (reason)
		printf(" reason=%s", reason);
	printf(" init_s=%s exit_s=%s guest_up_s=%s maxrss_kb=%s exit=%s@@\n", init_txt, exit_s_txt,
	       sc.guest_up[0] ? sc.guest_up : "-", rss_txt, exit_txt);
	fflush(stdout);
	return reason ? 1 : 0;
}
