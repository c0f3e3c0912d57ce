/* ember's drive moves (docs/storage-migration.md):
 *   PUT /drives/{id}/move {"path", "max_bandwidth"} with the destination's
 *       fd (SCM_RIGHTS): start; 204 once the copy runs in the background
 *   GET /drives/{id}/move: the progress, from the mover's report
 *   PUT /drives/{id}/move/cancel {}: stop it, the drive stays on its file
 * The work is monitor/drive_move.c's, on the vmm thread. */
#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "monitor/vm.h"

#define PREFIX "/drives/"

/* The id and whether the path ends in /move/cancel (else /move). */
static bool parse(const char *path, char *id, size_t idlen, bool *cancel)
{
	if (strncmp(path, PREFIX, strlen(PREFIX)))
		return false;
	const char *s = path + strlen(PREFIX), *slash = strchr(s, '/');
	if (!slash || slash == s || (size_t)(slash - s) >= idlen)
		return false;
	if (strcmp(slash, "/move") && strcmp(slash, "/move/cancel"))
		return false;
	memcpy(id, s, (size_t)(slash - s));
	id[slash - s] = '\0';
	*cancel = !strcmp(slash, "/move/cancel");
	return true;
}

bool api_drive_move_path(const char *path)
{
	char id[CFG_NAME_MAX + 1];
	bool cancel;
	return parse(path, id, sizeof(id), &cancel);
}

static json_t *report_json(const struct dmove_report *r)
{
	uint64_t ms = r->elapsed_ns / 1000000;
	uint64_t rate = r->elapsed_ns
			    ? (uint64_t)((unsigned __int128)r->copied * 1000000000u / r->elapsed_ns)
			    : 0;
	json_t *o =
	    json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "drive_id", r->drive, "path",
		      r->path, "phase", dmove_phase_name(r->phase), "bytes_copied",
		      (json_int_t)r->copied, "bytes_remaining", (json_int_t)(r->size - r->copied),
		      "bytes_total", (json_int_t)r->size, "data_bytes", (json_int_t)r->data_bytes,
		      "mirrored_bytes", (json_int_t)r->mirrored, "rate_bps", (json_int_t)rate,
		      "max_bandwidth", (json_int_t)r->max_bandwidth, "elapsed_ms", (json_int_t)ms);
	if (o && r->phase == DMOVE_COMPLETED)
		json_object_set_new(o, "pivot_pause_us",
				    json_integer((json_int_t)(r->pivot_ns / 1000)));
	if (o)
		json_object_set_new(o, "error", r->error[0] ? json_string(r->error) : json_null());
	return o;
}

/* The body of a start: {"path": non-empty string, "max_bandwidth": >= 0}. */
static int check_start(json_t *b, const char **path, uint64_t *bw, char *fault, size_t len)
{
	const char *k;
	json_t *v;
	json_object_foreach(b, k, v)
	{
		if (strcmp(k, "path") && strcmp(k, "max_bandwidth")) {
			snprintf(fault, len, "unknown field \"%.64s\" (known: path, max_bandwidth)",
				 k);
			return 400;
		}
	}
	v = json_object_get(b, "max_bandwidth");
	if (v && (!json_is_integer(v) || json_integer_value(v) < 0)) {
		snprintf(fault, len, "max_bandwidth: must be a non-negative integer (bytes/s)");
		return 400;
	}
	*bw = v ? (uint64_t)json_integer_value(v) : 0;
	*path = json_string_value(json_object_get(b, "path"));
	if (!*path || !**path || strlen(*path) >= CFG_PATH_MAX) {
		snprintf(fault, len,
			 "missing field \"path\" (the destination's path, which the "
			 "configuration names after the move)");
		return 400;
	}
	return 0;
}

void api_drive_move(struct api *a, const struct http_req *rq, struct http_resp *rs)
{
	char id[CFG_NAME_MAX + 1], fault[API_FAULT_MAX];
	bool cancel = false;
	(void)parse(rq->path, id, sizeof(id), &cancel);
	enum http_method m = (enum http_method)rq->method;
	if (m == HTTP_GET && !cancel) {
		struct dmove_report r;
		dmove_report(&a->move, &r);
		if (r.phase == DMOVE_NONE || strcmp(r.drive, id))
			return http_fault(rs, 400, "drive \"%s\": no move has been started", id);
		return http_reply_json(rs, 200, report_json(&r));
	}
	if (m != HTTP_PUT)
		return http_fault(rs, 400, "Invalid request method and/or path: %s %.200s.",
				  rq->method_name, rq->path);
	if (api_busy(a, rs))
		return;
	if (atomic_load(&a->state) == API_NOT_STARTED)
		return http_fault(rs, 400, "%s", api_pre_boot);
	json_error_t jerr;
	json_t *b = rq->body_len ? json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr)
				 : json_object();
	if (!b)
		return http_fault(rs, 400, "invalid JSON: %s (line %d, column %d)", jerr.text,
				  jerr.line, jerr.column);
	struct api_call c = {
	    .op = cancel ? API_OP_MOVE_CANCEL : API_OP_MOVE, .drive = id, .stream_fd = -1};
	int r = json_is_object(b) ? 0 : 400;
	if (r)
		snprintf(fault, sizeof(fault), "the body must be a JSON object");
	else if (cancel && json_object_size(b))
		r = 400, snprintf(fault, sizeof(fault), "a cancel takes an empty body ({})");
	else if (!cancel && !(r = check_start(b, &c.path, &c.max_bw, fault, sizeof(fault)))) {
		if (!a->req_fd || *a->req_fd < 0)
			r = 400, snprintf(fault, sizeof(fault),
					  "drive \"%s\": the request carries no file descriptor "
					  "of the destination (SCM_RIGHTS)",
					  id);
		else
			c.stream_fd = *a->req_fd, *a->req_fd = -1; /* dmove_start takes it */
	}
	if (!r) {
		api_vmm_call(a, &c);
		r = c.status;
		snprintf(fault, sizeof(fault), "%s", c.fault);
	}
	json_decref(b);
	if (r)
		return http_fault(rs, r, "%s", fault);
	rs->status = 204;
}

void api_drive_move_do(struct api *a, struct api_call *c)
{
	int r = c->op == API_OP_MOVE ? dmove_start(&a->move, c->drive, c->stream_fd, c->path,
						   c->max_bw, c->fault, sizeof(c->fault))
				     : dmove_cancel(&a->move, c->drive, c->fault, sizeof(c->fault));
	c->stream_fd = -1;
	if (r)
		c->status = 400;
}

void api_drive_moved(void *opaque, unsigned index, const char *path)
{
	struct api *a = opaque;
	const char *name = a->cfg->blocks[index].name;
	size_t i;
	json_t *d;
	pthread_mutex_lock(&a->view_lock);
	json_array_foreach(a->drives, i, d)
	{
		if (!strcmp(api_str(d, "drive_id") ? api_str(d, "drive_id") : "", name))
			json_object_set_new(d, "path_on_host", json_string(path));
	}
	pthread_mutex_unlock(&a->view_lock);
}
