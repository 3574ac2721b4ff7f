/*
 * The helper local-path-provisioner runs on a node to make or remove a volume's directory
 * (config.json's setupCommand and teardownCommand), in place of upstream's busybox shell
 * scripts: our images have no shell. Called as
 *   volume-dir -p <dir> -s <size bytes> -m <Filesystem|Block> -a <create|delete>
 * create: makes <dir> and its parents, mode 0777 (hostPath volumes get no fsGroup, and the
 * brokers run as users of their own); delete: removes <dir> and everything below it, a missing
 * one included. Built with `gcc -static` (images.sh).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "volume-dir: %s %s: %s\n", what, path, strerror(errno));
	return 1;
}

static int make_dirs(char *path)
{
	for (char *slash = strchr(path + 1, '/');; slash = strchr(slash + 1, '/')) {
		if (slash)
			*slash = '\0';
		if (mkdir(path, 0777) != 0 && errno != EEXIST)
			return fail("mkdir", path);
		if (!slash)
			break;
		*slash = '/';
	}
	/* mkdir's mode passes through the umask; the volume must be writable by any user. */
	return chmod(path, 0777) == 0 ? 0 : fail("chmod", path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path) == 0 ? 0 : fail("remove", path);
}

int main(int argc, char **argv)
{
	char *dir = NULL, *action = NULL;
	int opt;

	while ((opt = getopt(argc, argv, "p:s:m:a:")) != -1) {
		if (opt == 'p')
			dir = optarg;
		else if (opt == 'a')
			action = optarg;
		else if (opt == '?')
			return 2;
	}
	if (!dir || dir[0] != '/' || strcmp(dir, "/") == 0 || !action) {
		fprintf(stderr, "usage: volume-dir -p <absolute dir, not /> -a <create|delete> [-s <bytes>] [-m <mode>]\n");
		return 2;
	}
	if (strcmp(action, "create") == 0) {
		if (make_dirs(dir) != 0)
			return 1;
	} else if (strcmp(action, "delete") == 0) {
		/* Done once the directory is gone, whoever removed it. */
		if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && access(dir, F_OK) == 0)
			return 1;
	} else {
		fprintf(stderr, "volume-dir: -a must be create or delete, got '%s'\n", action);
		return 2;
	}
	printf("volume-dir: %s %s\n", action, dir);
	return 0;
}
