/*
 * qmp: a minimal QMP client, so that the workload benchmark can read a QEMU VM's KVM
 * statistics (query-stats) in the KVM lab's L1, which has busybox and no socat or Python.
 * Built statically by scripts/bench (gcc -O2 -static).
 *
 * Usage: qmp SOCKET COMMAND_JSON...
 *
 * Connects to QEMU's QMP socket (-qmp unix:SOCKET,server=on,wait=off), reads the greeting,
 * negotiates (qmp_capabilities), then sends each COMMAND_JSON (one QMP command object per
 * argument) and prints QEMU's answer to it on one line of stdout. Asynchronous events QEMU
 * sends in between are skipped. The whole exchange is limited to 20 seconds.
 *
 * Exit status: 0 when every command was answered with "return"; 1 when one was answered
 * with "error" (the answer is still printed); 2 on a usage, connection or protocol error
 * (message on stderr).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* QEMU's answers are single lines; query-stats for a few vCPUs stays far below this. */
#define LINE_MAX_QMP (1 << 20)

static char line[LINE_MAX_QMP];
static char rbuf[65536];
static size_t rlen, rpos;

static void die(const char *fmt, ...)
{
	va_list ap;
	fputs("qmp: error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "qmp: error: no answer from QEMU within 20 s\n";
	if (write(2, msg, sizeof msg - 1) < 0) {
		/* nothing more we can do */
	}
	_exit(2);
}

/* Read one line (without its \r\n) from fd into line[]; dies on EOF or overflow. */
static void read_line(int fd)
{
	size_t n = 0;
	for (;;) {
		if (rpos == rlen) {
			ssize_t got = read(fd, rbuf, sizeof rbuf);
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
				die("reading the QMP socket: %s", strerror(errno));
			if (got == 0)
				die("QEMU closed the QMP socket");
			rlen = (size_t)got;
			rpos = 0;
		}
		char c = rbuf[rpos++];
		if (c == '\n')
			break;
		if (c == '\r')
			continue;
		if (n + 1 >= sizeof line)
			die("a QMP answer longer than %d bytes", LINE_MAX_QMP);
		line[n++] = c;
	}
	line[n] = '\0';
}

static void send_all(int fd, const char *s)
{
	size_t len = strlen(s);
	while (len > 0) {
		ssize_t n = write(fd, s, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("writing the QMP socket: %s", strerror(errno));
		s += n;
		len -= (size_t)n;
	}
}

/* Send one command, return 0 for a "return" answer, 1 for an "error" answer. */
static int command(int fd, const char *json, int print)
{
	send_all(fd, json);
	send_all(fd, "\n");
	for (;;) {
		read_line(fd);
		if (strncmp(line, "{\"return\"", 9) == 0 || strncmp(line, "{\"error\"", 8) == 0) {
			if (print) {
				puts(line);
				fflush(stdout);
			}
			return line[2] == 'e';
		}
		/* Events look like {"timestamp": {...}, "event": "NAME", ...}. */
		if (strstr(line, "\"event\"") != NULL)
			continue;
		die("unexpected QMP line: %.200s", line);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		fputs("Usage: qmp SOCKET COMMAND_JSON...\n"
		      "Sends each QMP command to QEMU's QMP socket and prints each answer on a line.\n",
		      argc < 3 ? stderr : stdout);
		return argc < 3 ? 2 : 0;
	}
	signal(SIGALRM, on_alarm);
	alarm(20);

	struct sockaddr_un addr;
	memset(&addr, 0, sizeof addr);
	addr.sun_family = AF_UNIX;
	if (strlen(argv[1]) >= sizeof addr.sun_path)
		die("socket path too long: %s", argv[1]);
	strcpy(addr.sun_path, argv[1]);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
		die("connecting to %s: %s", argv[1], strerror(errno));

	read_line(fd);
	if (strncmp(line, "{\"QMP\"", 6) != 0)
		die("no QMP greeting on %s: %.200s", argv[1], line);
	if (command(fd, "{\"execute\":\"qmp_capabilities\"}", 0) != 0)
		die("qmp_capabilities refused: %.200s", line);

	int status = 0;
	for (int i = 2; i < argc; i++)
		status |= command(fd, argv[i], 1);
	close(fd);
	return status;
}
