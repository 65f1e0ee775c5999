/*
 * unix-console PATH [SECONDS]: a VMM's serial console on a Unix socket (Cloud Hypervisor's
 * `--serial socket=PATH`), on stdin and stdout. Runs in L1 (busybox has no Unix-socket
 * client): waits up to SECONDS (default 30) for the socket to accept, then copies stdin to
 * the socket and the socket to stdout until the VMM closes it. Stdin ending does not end
 * the copy the other way. Exit status 0 when the VMM closed the socket, 1 on an error.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int write_all(int fd, const char *buf, ssize_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, (size_t)len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int wait_s = argc > 2 ? atoi(argv[2]) : 30;
	if (argc < 2 || strlen(argv[1]) >= sizeof(addr.sun_path) || wait_s <= 0) {
		fprintf(stderr, "usage: unix-console PATH [SECONDS]\n");
		return 2;
	}
	strcpy(addr.sun_path, argv[1]);
	int sock = -1;
	time_t end = time(NULL) + wait_s;
	for (;;) {
		sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (sock < 0) {
			perror("unix-console: socket");
			return 1;
		}
		if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) == 0)
			break;
		int err = errno;
		close(sock);
		if (time(NULL) >= end) {
			fprintf(stderr, "unix-console: %s: %s after %d s\n", argv[1], strerror(err), wait_s);
			return 1;
		}
		usleep(50 * 1000);
	}
	struct pollfd fds[2] = {
		{ .fd = STDIN_FILENO, .events = POLLIN },
		{ .fd = sock, .events = POLLIN },
	};
	char buf[4096];
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("unix-console: poll");
			return 1;
		}
		if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(sock, buf, sizeof(buf));
			if (n == 0)
				return 0;
			if (n < 0 && errno != EINTR) {
				perror("unix-console: read from the socket");
				return 1;
			}
			if (n > 0 && write_all(STDOUT_FILENO, buf, n) < 0) {
				perror("unix-console: write to stdout");
				return 1;
			}
		}
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n == 0) {
				fds[0].fd = -1; /* stdin ended: keep copying the console out */
			} else if (n < 0 && errno != EINTR) {
				perror("unix-console: read from stdin");
				return 1;
			} else if (n > 0 && write_all(sock, buf, n) < 0) {
				perror("unix-console: write to the socket");
				return 1;
			}
		}
	}
}
