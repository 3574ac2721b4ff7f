/*
 * The sandbox ("pause") container of every pod on a node.sh node: the pod's first process, which
 * holds its namespaces open. It reaps the orphans that end up under it and exits 0 on SIGINT or
 * SIGTERM. Built with `gcc -static`, so that the image needs no libraries.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig) { (void)sig; stopping = 1; }

static void on_child(int sig)
{
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

int main(void)
{
	sigset_t handled, waiting;
	struct sigaction stop = {.sa_handler = on_stop};
	struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};

	sigemptyset(&handled);
	sigaddset(&handled, SIGINT);
	sigaddset(&handled, SIGTERM);
	sigaddset(&handled, SIGCHLD);
	/* Blocked outside sigsuspend, so a signal between the check and the wait is never lost. */
	if (sigprocmask(SIG_BLOCK, &handled, &waiting) != 0 || sigaction(SIGINT, &stop, NULL) != 0 ||
	    sigaction(SIGTERM, &stop, NULL) != 0 || sigaction(SIGCHLD, &child, NULL) != 0) {
		perror("pause: signal setup");
		return 1;
	}
	sigdelset(&waiting, SIGINT);
	sigdelset(&waiting, SIGTERM);
	sigdelset(&waiting, SIGCHLD);
	while (!stopping)
		sigsuspend(&waiting);
	return 0;
}
