/* The config tests' fixture (test_config.c, test_config_devices.c): a fresh
 * temporary folder per test group, INI files written into it, and the
 * checks both make on cfg_parse_ini.  Included by each test program (the
 * Makefile builds every tests/unit/test_*.c alone), so all is static.
 *
 * Include after cmocka.h.  CONFIG_FIXTURE_DIR names the folder (mkdtemp's
 * template, under /tmp); define it first for a name of your own. */
#ifndef CONFIG_FIXTURE_H
#define CONFIG_FIXTURE_H

#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"

#ifndef CONFIG_FIXTURE_DIR
#define CONFIG_FIXTURE_DIR "/tmp/ember-test-config-XXXXXX"
#endif

struct fixture {
	char dir[64];
	char path[128]; /* the last file written */
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	strcpy(fx->dir, CONFIG_FIXTURE_DIR);
	if (!mkdtemp(fx->dir)) {
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int rc = nftw(fx->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);

	free(fx);
	return rc;
}

/* Write text to DIR/name and return the file's path. */
static const char *write_file(struct fixture *fx, const char *name, const char *text)
{
	FILE *f;

	snprintf(fx->path, sizeof(fx->path), "%s/%s", fx->dir, name);
	f = fopen(fx->path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
	return fx->path;
}

/* Parse an INI file given by a name without a folder, as the command line
 * may: text is written to DIR/here.ini and parsed from inside DIR, over
 * cfg_defaults. */
static void parse_ini_in_dir(struct fixture *fx, const char *text, struct vm_config *c)
{
	char err[CFG_ERR_MAX] = "", cwd[4096];

	write_file(fx, "here.ini", text);
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(fx->dir), 0);
	cfg_defaults(c);
	assert_int_equal(cfg_parse_ini("here.ini", c, err, sizeof(err)), 0);
	assert_int_equal(chdir(cwd), 0);
}

/* An INI file that cfg_parse_ini must refuse, on its line, with msg. */
struct bad_case {
	const char *text;
	int line;
	const char *msg; /* after "FILE:LINE: " */
};

/* Each case, written to its own file and parsed over cfg_defaults: -EINVAL,
 * "FILE:LINE: msg" (msg whole, or only its start when prefix is set), and
 * the config as it was: a file with an error changes nothing. */
static void expect_bad_inis(struct fixture *fx, const struct bad_case *cases, size_t n, bool prefix)
{
	for (size_t i = 0; i < n; i++) {
		const struct bad_case *bc = &cases[i];
		struct vm_config c, before;
		char err[CFG_ERR_MAX] = "", want[CFG_ERR_MAX], name[32];
		const char *path;
		int rc;

		snprintf(name, sizeof(name), "bad%zu.ini", i);
		path = write_file(fx, name, bc->text);
		cfg_defaults(&c);
		memcpy(&before, &c, sizeof(c));
		rc = cfg_parse_ini(path, &c, err, sizeof(err));
		snprintf(want, sizeof(want), "%s:%d: %s", path, bc->line, bc->msg);
		if (rc != -EINVAL ||
		    (prefix ? strncmp(err, want, strlen(want)) : strcmp(err, want)))
			fail_msg("case %zu:\n%s\nrc %d, err \"%s\"\nwant \"%s\"", i, bc->text, rc,
				 err, want);
		assert_memory_equal(&c, &before, sizeof(c));
	}
}

#endif
