/*
 * The smallest useful workload image for node.sh: prints one line (its arguments, or a default
 * greeting) to stdout and waits until SIGINT or SIGTERM, then exits 0. As a container's PID 1 it
 * gets no default signal actions, hence the handlers. Built with `gcc -static`.
 *
 * SLEEPER_PORT=<port>: also listens on TCP <port> and writes the same line to every connection
 * (Services and pod networking can be checked with it).
 * SLEEPER_INTERVAL=<seconds>: prints a heartbeat after each such quiet spell (default 30; 0 = none).
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig) { (void)sig; stopping = 1; }

static int listen_on(const char *port_text)
{
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);

	addr.sin_port = htons((unsigned short)strtoul(port_text, NULL, 10));
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
		perror("sleeper: listen");
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv)
{
	/* No SA_RESTART: a stop signal interrupts poll() at once. */
	struct sigaction stop = {.sa_handler = on_stop};
	const char *interval_text = getenv("SLEEPER_INTERVAL"), *port_text = getenv("SLEEPER_PORT");
	int interval = interval_text ? atoi(interval_text) : 30;
	char host[256] = "?", line[4096];
	struct pollfd listener = {.fd = -1, .events = POLLIN};
	unsigned long beats = 0;
	size_t len;

	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGTERM, &stop, NULL);
	signal(SIGPIPE, SIG_IGN);
	gethostname(host, sizeof host - 1);
	len = (size_t)snprintf(line, sizeof line, "sleeper: pid %d on %s:", (int)getpid(), host);
	if (argc < 2)
		len += (size_t)snprintf(line + len, sizeof line - len, " hello from a node.sh node");
	for (int i = 1; i < argc && len < sizeof line - 2; i++)
		len += (size_t)snprintf(line + len, sizeof line - len, " %s", argv[i]);
	if (len > sizeof line - 2)
		len = sizeof line - 2;
	line[len++] = '\n';
	line[len] = '\0';
	fputs(line, stdout);
	if (port_text && *port_text) {
		listener.fd = listen_on(port_text);
		printf("sleeper: listening on port %s\n", port_text);
	}
	fflush(stdout);
	while (!stopping) {
		int ready = poll(&listener, listener.fd >= 0 ? 1 : 0, interval > 0 ? interval * 1000 : -1);
		if (ready == 0) {
			printf("sleeper: heartbeat %lu\n", ++beats);
			fflush(stdout);
		} else if (ready > 0) {
			int conn = accept(listener.fd, NULL, NULL);
			if (conn >= 0) {
				if (write(conn, line, len) < 0)
					perror("sleeper: write");
				close(conn);
			}
		} else if (errno != EINTR) {
			perror("sleeper: poll");
			return 1;
		}
	}
	printf("sleeper: stopping\n");
	return 0;
}
