/* `--config-file FILE.json`: Firecracker's configuration file (the body
 * of GET /vm/config), applied object by object through the same checks as
 * the API's PUTs, so a file and a sequence of API calls mean the same. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "monitor/api/api.h"

static const char *const singles[] = {"boot-source", "machine-config", "vsock",
				      "entropy",     "logger",	       "metrics"};
static const char *const arrays[] = {"drives", "network-interfaces"};

/* Firecracker's objects ember does not have: refused by name, so a file
 * that needs them fails at once instead of booting something else. */
static const char *const unsupported[] = {"balloon", "mmds-config", "cpu-config",
					  "serial",  "pmem",	    "memory-hotplug"};

static int put(struct api *a, const char *path, const char *what, const char *id, json_t *o,
	       char *err, size_t len)
{
	char fault[API_FAULT_MAX];
	if (json_is_null(o))
		return 0;
	if (api_put_object(a, what, id, o, fault, sizeof(fault)) == 0)
		return 0;
	snprintf(err, len, "%s: %s%s%s: %s", path, what, id ? "/" : "", id ? id : "", fault);
	return -EINVAL;
}

/* ember's own part: {"options": {...}} as PUT /ember/options. */
static int apply_ember(struct api *a, const char *path, json_t *e, char *err, size_t len)
{
	const char *key;
	json_t *v;
	if (!json_is_object(e))
		return snprintf(err, len, "%s: ember: expected a JSON object", path), -EINVAL;
	json_object_foreach(e, key, v)
	{
		if (strcmp(key, "options"))
			return snprintf(err, len,
					"%s: unknown field \"ember.%.64s\" (known: options)", path,
					key),
			       -EINVAL;
		if (put(a, path, "ember-options", NULL, v, err, len))
			return -EINVAL;
	}
	return 0;
}

int api_load_config_file(struct api *a, const char *path, char *err, size_t len)
{
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	const char *key;
	json_t *v;
	int r = 0;

	if (!root)
		return snprintf(err, len, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text),
		       -EINVAL;
	if (!json_is_object(root)) {
		json_decref(root);
		return snprintf(err, len, "%s: expected a JSON object at the top", path), -EINVAL;
	}
	/* In a fixed order, whatever the file's: devices check against the
	 * machine configuration, the logger first so it sees the rest. */
	static const char *const order[] = {"logger",	   "metrics", "machine-config",
					    "boot-source", "vsock",   "entropy"};
	for (unsigned i = 0; i < sizeof(order) / sizeof(order[0]) && !r; i++)
		if ((v = json_object_get(root, order[i])))
			r = put(a, path, order[i], NULL, v, err, len);
	json_object_foreach(root, key, v)
	{
		if (r)
			break;
		bool known = false;
		for (unsigned i = 0; i < sizeof(singles) / sizeof(singles[0]); i++)
			known |= !strcmp(key, singles[i]);
		if (known)
			continue;
		for (unsigned i = 0; i < sizeof(arrays) / sizeof(arrays[0]) && !known; i++) {
			if (strcmp(key, arrays[i]))
				continue;
			known = true;
			if (json_is_null(v))
				break;
			if (!json_is_array(v)) {
				r = -EINVAL;
				snprintf(err, len, "%s: %s: expected an array", path, key);
				break;
			}
			size_t j;
			json_t *d;
			json_array_foreach(v, j, d) if (!r) r =
			    put(a, path, key, NULL, d, err, len);
		}
		if (known)
			continue;
		if (!strcmp(key, "ember")) {
			r = apply_ember(a, path, v, err, len);
			continue;
		}
		for (unsigned i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
			if (!strcmp(key, unsupported[i]) && !json_is_null(v)) {
				r = -EINVAL;
				snprintf(err, len, "%s: %s: not supported by ember", path, key);
			}
		if (!r && !json_is_null(v)) {
			bool skip = false;
			for (unsigned i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++)
				skip |= !strcmp(key, unsupported[i]);
			if (!skip) {
				r = -EINVAL;
				snprintf(err, len, "%s: unknown field \"%.64s\"", path, key);
			}
		}
	}
	json_decref(root);
	return r;
}
