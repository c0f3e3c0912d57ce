/* The snapshot tests' fixture (test_snapshot_format.c, test_snapshot_mem.c):
 * a fresh temporary directory per test, and the checks both make on what
 * lands in it.  Included by each test program (the Makefile builds every
 * tests/unit/test_*.c alone), so all is static.  Include after cmocka.h. */
#ifndef EMBER_TEST_TMPDIR_FIXTURE_H
#define EMBER_TEST_TMPDIR_FIXTURE_H

#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Makes $TMPDIR/NAME-XXXXXX (TMPDIR unset or empty: /tmp) and writes its
 * path to dir (size bytes).  TMPDIR=/dev/shm runs the same on tmpfs.
 * 0, or -1 when mkdtemp fails. */
static int tmpdir_make(char *dir, size_t size, const char *name)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, size, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
	return mkdtemp(dir) ? 0 : -1;
}

/* Removes dir and all in it, first giving back the write permission a
 * test may have taken.  0, or -1 when rm fails. */
static int tmpdir_remove(const char *dir)
{
	char cmd[192];
	chmod(dir, 0700);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* How many temp files (".tmp-" in the name) an atomic write left in dir. */
static int count_tmp(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += strstr(e->d_name, ".tmp-") != NULL;
	closedir(d);
	return n;
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

#endif
