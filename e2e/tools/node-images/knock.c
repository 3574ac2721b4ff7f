/*
 * A TCP connection check for node.sh's pods: `knock [-w SECONDS] IP:PORT...` tries each address
 * once and prints one line for it: "IP:PORT connected", "IP:PORT refused" or "IP:PORT timed out"
 * (no answer within 3 s, as a policy that drops rather than rejects leaves it). With -w, an address
 * that does not connect is tried again every 200 ms for up to SECONDS (a NetworkPolicy enforcer
 * admits a new pod only once it has seen it), and the last outcome is printed. Exits 0 once every
 * line is printed, whatever they say: the caller counts them. Built with `gcc -static`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum outcome { CONNECTED, REFUSED, TIMED_OUT, FAILED };
static const char *const said[] = {"connected", "refused", "timed out", "failed"};

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static enum outcome knock(const struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), err = 0;
	socklen_t len = sizeof err;
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	enum outcome result;

	if (fd < 0)
		return FAILED;
	if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) == 0)
		result = CONNECTED;
	else if (errno != EINPROGRESS)
		result = errno == ECONNREFUSED ? REFUSED : FAILED;
	else if (poll(&p, 1, 3000) == 0)
		result = TIMED_OUT;
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		result = FAILED;
	else
		result = err == 0 ? CONNECTED : err == ECONNREFUSED ? REFUSED : err == ETIMEDOUT ? TIMED_OUT : FAILED;
	close(fd);
	return result;
}

int main(int argc, char **argv)
{
	double wait = 0;
	int first = 1;

	if (argc > 2 && strcmp(argv[1], "-w") == 0) {
		wait = strtod(argv[2], NULL);
		first = 3;
	}
	if (first >= argc) {
		fprintf(stderr, "usage: knock [-w SECONDS] IP:PORT...\n");
		return 2;
	}
	for (int i = first; i < argc; i++) {
		char ip[64];
		const char *colon = strrchr(argv[i], ':');
		struct sockaddr_in addr = {.sin_family = AF_INET};
		size_t ip_len = colon ? (size_t)(colon - argv[i]) : 0;

		if (!colon || ip_len >= sizeof ip) {
			fprintf(stderr, "knock: %s is not IP:PORT\n", argv[i]);
			return 2;
		}
		memcpy(ip, argv[i], ip_len);
		ip[ip_len] = '\0';
		addr.sin_port = htons((unsigned short)strtoul(colon + 1, NULL, 10));
		if (inet_pton(AF_INET, ip, &addr.sin_addr) != 1) {
			fprintf(stderr, "knock: %s is not an IPv4 address\n", ip);
			return 2;
		}
		double deadline = now() + wait;
		enum outcome result = knock(&addr);
		while (result != CONNECTED && now() < deadline) {
			usleep(200000);
			result = knock(&addr);
		}
		printf("%s %s\n", argv[i], said[result]);
		fflush(stdout);
	}
	return 0;
}
