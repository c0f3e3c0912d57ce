/* The API's metrics (PUT /metrics): one JSON line per flush, as
 * Firecracker's, on the vmm thread. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"

/* ---- metrics: one JSON line per flush, counters since the last one ---- */

struct counters {
	char *line;
	size_t len, size;
	bool first;
};

static void counter(void *opaque, const char *name, uint64_t value)
{
	struct counters *c = opaque;
	if (c->len < c->size)
		c->len += (size_t)snprintf(c->line + c->len, c->size - c->len, "%s\"%s\":%llu",
					   c->first ? "" : ",", name, (unsigned long long)value);
	c->first = false;
}

/* Each virtio device's counters, as Firecracker's per-device metrics
 * ("block_<id>", "net_<id>", "entropy", "vsock"): totals since boot. */
static int device_metrics(struct vm *vm, char *line, size_t len, size_t size)
{
	struct virtio_dev *d;
	for (unsigned i = 0; (d = vdevs_get(vm, i)) != NULL && len < size; i++) {
		const char *id = strchr(d->name, ' ');
		len += (size_t)snprintf(line + len, size - len, ",\"%s%s%s\":{", d->ops->metrics,
					id ? "_" : "", id ? id + 1 : "");
		struct counters c = {line, len, size, true};
		virtio_dev_counters(d, counter, &c);
		len = c.len;
		if (len < size)
			len += (size_t)snprintf(line + len, size - len, "}");
	}
	return (int)(len < size ? len : size);
}

void api_metrics_flush(struct api *a)
{
	if (a->metrics_fd < 0)
		return;
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	unsigned long long get = atomic_load(&a->n_get), put = atomic_load(&a->n_put),
			   patch = atomic_load(&a->n_patch), bad = atomic_load(&a->n_bad);
	unsigned long long ex[3] = {0, 0, 0};
	bool started = atomic_load(&a->state) != API_NOT_STARTED;
	struct vm *vm = a->vm;
	if (started)
		for (unsigned i = 0; i < vm->nr_vcpus; i++) {
			ex[0] += vm->vcpus[i].nr_exits;
			ex[1] += vm->vcpus[i].nr_pio_exits;
			ex[2] += vm->vcpus[i].nr_mmio_exits;
		}
	static char line[16384]; /* vmm thread only */
	int n = snprintf(
	    line, sizeof(line),
	    "{\"utc_timestamp_ms\":%lld,\"api_server\":{\"process_startup_time_us\":%lld,"
	    "\"get_requests\":%llu,\"put_requests\":%llu,\"patch_requests\":%llu,"
	    "\"bad_requests\":%llu},\"vcpu\":{\"exits\":%llu,\"exit_io\":%llu,\"exit_mmio\":%llu,"
	    "\"exit_other\":%llu}",
	    (long long)rt.tv_sec * 1000LL + rt.tv_nsec / 1000000,
	    (long long)((a->t_listening.tv_sec - a->t_main.tv_sec) * 1000000LL +
			(a->t_listening.tv_nsec - a->t_main.tv_nsec) / 1000),
	    get - a->last_get, put - a->last_put, patch - a->last_patch, bad - a->last_bad,
	    ex[0] - a->last_exits[0], ex[1] - a->last_exits[1], ex[2] - a->last_exits[2],
	    (ex[0] - ex[1] - ex[2]) - (a->last_exits[0] - a->last_exits[1] - a->last_exits[2]));
	if (started) {
		const struct vm_stats *s = &vm->stats;
		long long boot = (long long)(s->t_running.tv_sec - s->t_start.tv_sec) * 1000000LL +
				 (s->t_running.tv_nsec - s->t_start.tv_nsec) / 1000;
		n += snprintf(line + n, sizeof(line) - (size_t)n,
			      ",\"ember\":{\"boot_time_us\":%lld", boot);
		if (atomic_load(&s->have_first_output))
			n += snprintf(
			    line + n, sizeof(line) - (size_t)n, ",\"first_output_us\":%lld",
			    (long long)(s->t_first_output.tv_sec - s->t_start.tv_sec) * 1000000LL +
				(s->t_first_output.tv_nsec - s->t_start.tv_nsec) / 1000);
		n += snprintf(line + n, sizeof(line) - (size_t)n, "}");
		n = device_metrics(vm, line, (size_t)n, sizeof(line));
	}
	n += snprintf(line + n, sizeof(line) - (size_t)n, "}\n");
	if ((size_t)n >= sizeof(line))
		return; /* cannot happen with VDEVS_MAX devices; never a torn line */
	if (write(a->metrics_fd, line, (size_t)n) == n) {
		a->last_get = get, a->last_put = put, a->last_patch = patch, a->last_bad = bad;
		memcpy(a->last_exits, ex, sizeof(ex));
	}
}
