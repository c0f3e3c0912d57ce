/* vCPU lifecycle and the run loop: one thread per vCPU, every exit handed
 * to the owner's vcpu_exit_ops. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vcpu/vcpu.h"

int vcpu_open(int vm_fd, unsigned index, size_t run_size, int *fd, struct kvm_run **run)
{
	*fd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (*fd < 0)
		return -errno;
	void *p = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
	if (p == MAP_FAILED) {
		int e = -errno;
		close(*fd);
		*fd = -1;
		return e;
	}
	*run = p;
	return 0;
}

void vcpu_adopt(struct vcpu *v, unsigned index, int fd, struct kvm_run *run, size_t run_size)
{
	memset(v, 0, sizeof(*v));
	v->index = index;
	pthread_mutex_init(&v->park_lock, NULL);
	pthread_cond_init(&v->park_cond, NULL);
	v->fd = fd;
	v->run = run;
	v->run_size = run_size;
}

int vcpu_create(struct vcpu *v, int vm_fd, unsigned index, size_t run_size)
{
	int fd;
	struct kvm_run *run;
	int r = vcpu_open(vm_fd, index, run_size, &fd, &run);
	if (r) {
		memset(v, 0, sizeof(*v));
		v->fd = -1;
		v->index = index;
		return r;
	}
	vcpu_adopt(v, index, fd, run, run_size);
	return 0;
}

static void on_kick(int sig)
{
	(void)sig;
}

/* True when a handler asked to stop. */
static bool handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	bool is_write = run->io.direction == KVM_EXIT_IO_OUT;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	v->nr_pio_exits++;
	/* rep ins/outs arrive as count accesses back to back. */
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		int r = v->ops->pio(v->opaque, v, run->io.port, data, run->io.size, is_write);
		if (r > 0)
			return true;
	}
	return false;
}

/* The kick handler is process-wide; without SA_RESTART so KVM_RUN
 * returns EINTR.  Installed once: a thread sandboxed before its
 * vcpu_run() (monitor's vm_vcpu0_thread) may not call sigaction. */
static atomic_bool kick_installed;

static int install_kick_handler(void)
{
	if (atomic_load(&kick_installed))
		return 0;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_kick;
	sigemptyset(&sa.sa_mask);
	if (sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0)
		return -errno;
	atomic_store(&kick_installed, true);
	return 0;
}

int vcpu_kick_init(void)
{
	return install_kick_handler() < 0 ? -errno : 0;
}

/* The top of the loop with a pause asked for: complete the last exit
 * (KVM_RUN with immediate_exit returns at once, EINTR, after finishing a
 * pending MMIO/PIO read), then wait until resumed or stopped. */
static void park(struct vcpu *v)
{
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	while (ioctl(v->fd, KVM_RUN, 0) == 0)
		; /* an exit already queued: handled when the guest resumes */
	v->run->immediate_exit = 0;
	pthread_mutex_lock(&v->park_lock);
	v->parked = true;
	pthread_cond_broadcast(&v->park_cond);
	while (atomic_load(&v->pause_req) && !atomic_load(&v->stop))
		pthread_cond_wait(&v->park_cond, &v->park_lock);
	v->parked = false;
	pthread_mutex_unlock(&v->park_lock);
}

void vcpu_pause(struct vcpu *v)
{
	atomic_store(&v->pause_req, true);
	if (v->run)
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (atomic_load(&v->thread_set))
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_wait_parked(struct vcpu *v)
{
	pthread_mutex_lock(&v->park_lock);
	while (!v->parked && !v->loop_done)
		pthread_cond_wait(&v->park_cond, &v->park_lock);
	pthread_mutex_unlock(&v->park_lock);
}

void vcpu_resume(struct vcpu *v)
{
	pthread_mutex_lock(&v->park_lock);
	atomic_store(&v->pause_req, false);
	pthread_cond_broadcast(&v->park_cond);
	pthread_mutex_unlock(&v->park_lock);
}

static void loop_ended(struct vcpu *v)
{
	pthread_mutex_lock(&v->park_lock);
	v->loop_done = true;
	pthread_cond_broadcast(&v->park_cond);
	pthread_mutex_unlock(&v->park_lock);
}

enum vcpu_stop vcpu_run(struct vcpu *v, const struct vcpu_exit_ops *ops, void *opaque)
{
	struct kvm_run *run = v->run;
	enum vcpu_stop why = VCPU_STOP_KICKED;
	sigset_t set;

	v->ops = ops;
	v->opaque = opaque;
	v->thread = pthread_self();
	atomic_store(&v->thread_set, true);
	if (install_kick_handler() < 0) {
		ops->stopped(opaque, v, VCPU_STOP_IOCTL);
		return VCPU_STOP_IOCTL;
	}
	sigemptyset(&set);
	sigaddset(&set, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	if (ops->ready && ops->ready(opaque, v))
		return VCPU_STOP_HANDLER;

	for (;;) {
		if (atomic_load(&v->pause_req) && !atomic_load(&v->stop))
			park(v);
		if (atomic_load(&v->stop))
			break;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				run->immediate_exit = 0;
				if (!atomic_load(&v->stop) && v->ops->interrupted &&
				    v->ops->interrupted(v->opaque, v) > 0) {
					why = VCPU_STOP_HANDLER;
					break;
				}
				continue;
			}
			why = VCPU_STOP_IOCTL;
			break;
		}
		v->nr_exits++;
		enum vcpu_stop stop = 0; /* 0: keep running */
		switch (run->exit_reason) {
		case KVM_EXIT_IO:
			if (handle_io(v))
				stop = VCPU_STOP_HANDLER;
			break;
		case KVM_EXIT_MMIO:
			v->nr_mmio_exits++;
			if (v->ops->mmio(v->opaque, v, run->mmio.phys_addr, run->mmio.data,
					 run->mmio.len, run->mmio.is_write) > 0)
				stop = VCPU_STOP_HANDLER;
			break;
		case KVM_EXIT_HLT:
			/* Only reaches userspace without an in-kernel LAPIC: no
			 * interrupt can ever arrive, so the guest is done. */
			stop = VCPU_STOP_HALTED;
			break;
		case KVM_EXIT_SHUTDOWN:
		case KVM_EXIT_SYSTEM_EVENT:
			stop = VCPU_STOP_SHUTDOWN;
			break;
		case KVM_EXIT_INTR:
			break;
		default: /* INTERNAL_ERROR, FAIL_ENTRY, anything unexpected */
			stop = VCPU_STOP_INTERNAL;
			break;
		}
		if (stop) {
			why = stop;
			break;
		}
	}
	if (why != VCPU_STOP_KICKED && why != VCPU_STOP_HANDLER)
		v->ops->stopped(v->opaque, v, why);
	loop_ended(v);
	return why;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	vcpu_run(v, v->ops, v->opaque);
	return NULL;
}

int vcpu_start(struct vcpu *v, const struct vcpu_exit_ops *ops, void *opaque)
{
	v->ops = ops;
	v->opaque = opaque;

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	/* The loop needs little stack; keep RSS small with many vCPUs. */
	pthread_attr_setstacksize(&attr, 256 * 1024);
	int r = pthread_create(&v->thread, &attr, vcpu_thread, v);
	pthread_attr_destroy(&attr);
	if (r)
		return -r;
	v->thread_started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	atomic_store(&v->stop, true);
	pthread_mutex_lock(&v->park_lock);
	pthread_cond_broadcast(&v->park_cond); /* a parked vCPU goes too */
	pthread_mutex_unlock(&v->park_lock);
	if (v->run)
		__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (atomic_load(&v->thread_set))
		pthread_kill(v->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *v)
{
	if (v->thread_started) {
		pthread_join(v->thread, NULL);
		v->thread_started = false;
	}
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}
