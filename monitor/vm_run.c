/* Running a VM: vCPU exit dispatch, stopping, the timeout, and the exit
 * path that leaves KVM's teardown to a child process. */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "monitor/exitcodes.h"
#include "monitor/startup.h"
#include "monitor/vm.h"

_Static_assert(JAIL_KICK_SIGNAL == VCPU_KICK_SIGNAL, "the filters allow only the kick signal");

/* An access on bus (what: "port" or "guest address").  Nothing there:
 * reads float high, as on a real ISA bus, writes are dropped, and
 * --verbose says so. */
static int dispatch(struct vm *vm, const struct bus *bus, const char *what, struct vcpu *v,
		    uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
	int r = bus_dispatch(bus, addr, data, len, is_write);
	if (r != -ENOENT && r != -ERANGE)
		return r;
	if (!is_write)
		memset(data, 0xff, len);
	if (vm->verbose)
		fprintf(stderr, "ember: vcpu%u: unhandled %s of %s 0x%llx (%u bytes)\n", v->index,
			is_write ? "write" : "read", what, (unsigned long long)addr, len);
	return 0;
}

static int on_pio(void *opaque, struct vcpu *v, uint16_t port, uint8_t *data, uint32_t len,
		  bool is_write)
{
	struct vm *vm = opaque;
	return dispatch(vm, &vm->pio, "port", v, port, data, len, is_write);
}

static int on_mmio(void *opaque, struct vcpu *v, uint64_t addr, uint8_t *data, uint32_t len,
		   bool is_write)
{
	struct vm *vm = opaque;
	return dispatch(vm, &vm->mmio, "guest address", v, addr, data, len, is_write);
}

static void on_stopped(void *opaque, struct vcpu *v, enum vcpu_stop why)
{
	struct vm *vm = opaque;
	char msg[128];
	int code;

	switch (why) {
	case VCPU_STOP_SHUTDOWN:
		code = EXIT_TRIPLE_FAULT;
		snprintf(msg, sizeof(msg), "vcpu%u: triple fault (shutdown)", v->index);
		/* hvt: name what a fault on a page its ELF protects was */
		(void)hvt_explain_shutdown(vm->hvt, v->fd, msg, sizeof(msg));
		break;
	case VCPU_STOP_HALTED:
		code = EXIT_GUEST_HALTED;
		snprintf(msg, sizeof(msg),
			 "vcpu%u: guest halted with no interrupt source (no irqchip)", v->index);
		break;
	case VCPU_STOP_IOCTL:
		code = EXIT_HOST;
		snprintf(msg, sizeof(msg), "vcpu%u: KVM_RUN failed: %s", v->index, strerror(errno));
		break;
	default:
		code = EXIT_KVM_ERROR;
		snprintf(msg, sizeof(msg), "vcpu%u: KVM could not run the guest (exit reason %u)",
			 v->index, v->run->exit_reason);
		break;
	}
	/* Only the first stop reports; a kicked vCPU's state is not news. */
	if (atomic_load(&vm->stopping))
		return;
	if (code == EXIT_TRIPLE_FAULT || code == EXIT_KVM_ERROR)
		vcpu_dump(v, stderr);
	vm_stop(vm, code, msg);
}

/* KVM_RUN was interrupted by a signal that was not a kick: the timeout
 * timer's, most likely. */
static int on_interrupted(void *opaque, struct vcpu *v)
{
	return vm_check_stop(opaque);
}

/* On each vCPU's thread, before its first KVM_RUN: load the thread's
 * filter.  vCPU 0 runs on the main thread, which also does the vmm's
 * work after the drop; or on a thread of its own (vm_start), created on
 * its creator's CPU, which here takes back its creator's CPUs (before the
 * filter: sched_setaffinity is not in it).  Failing that it stays on the
 * one CPU, which slows it, nothing more. */
static int on_ready(void *opaque, struct vcpu *v)
{
	struct vm *vm = opaque;
	bool on_main = v->index == 0 && !vm->threaded;
	if (v->index == 0 && vm->vcpu0_thread)
		return 0; /* made ahead: sandboxed already */
	if (v->index == 0 && CPU_COUNT(&vm->vcpu0_cpus))
		(void)sched_setaffinity(0, sizeof(vm->vcpu0_cpus), &vm->vcpu0_cpus);
	int r = jail_filter_apply(on_main ? &vm->vmm_filter : &vm->vcpu_filter);
	if (r) {
		char msg[96];
		snprintf(msg, sizeof(msg), "vcpu%u: cannot load the seccomp filter: %s", v->index,
			 strerror(-r));
		vm_stop(vm, EXIT_HOST, msg);
		return 1;
	}
	return 0;
}

static const struct vcpu_exit_ops exit_ops = {
    .pio = on_pio,
    .mmio = on_mmio,
    .interrupted = on_interrupted,
    .stopped = on_stopped,
    .ready = on_ready,
};

void vm_stop(struct vm *vm, int code, const char *why)
{
	int expected = 0;
	if (!atomic_compare_exchange_strong(&vm->stopping, &expected, 1))
		return;
	clock_gettime(CLOCK_MONOTONIC, &vm->stats.t_stop);
	vm->exit_code = code;
	snprintf(vm->stop_reason, sizeof(vm->stop_reason), "%s", why);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	ev_wake(&vm->ev);
}

int vm_check_stop(struct vm *vm)
{
	if (atomic_load(&vm->stopping))
		return 1;
	if (!vm->deadline_ns || ev_now_ns() < vm->deadline_ns)
		return 0;
	char msg[64];
	snprintf(msg, sizeof(msg), "timeout after %.3g s", (double)vm->cfg->timeout_ms / 1000.0);
	vm_stop(vm, EXIT_TIMEOUT, msg);
	return 1;
}

/* A POSIX timer aimed at this thread (the boot vCPU's): its signal pulls
 * KVM_RUN out with EINTR and on_interrupted() checks the deadline.  It
 * repeats every 10 ms in case a tick lands outside KVM_RUN.  A deadline
 * set already (`ember run` counts --timeout from its start: startup.h)
 * is kept, so start-up and the run share one --timeout. */
static int arm_timeout(struct vm *vm, timer_t *timer)
{
	uint64_t now = ev_now_ns();
	if (!vm->deadline_ns)
		vm->deadline_ns = now + vm->cfg->timeout_ms * 1000000ULL;
	/* Past already: fire at once (a zero it_value would disarm). */
	uint64_t left = vm->deadline_ns > now ? vm->deadline_ns - now : 1;
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD_ID;
	sev.sigev_signo = VCPU_KICK_SIGNAL;
	sev._sigev_un._tid = gettid();
	if (timer_create(CLOCK_MONOTONIC, &sev, timer) < 0)
		return -errno;
	struct itimerspec its = {
	    .it_value = {.tv_sec = (time_t)(left / 1000000000ULL),
			 .tv_nsec = (long)(left % 1000000000ULL)},
	    .it_interval = {.tv_nsec = 10000000L},
	};
	if (timer_settime(*timer, 0, &its, NULL) < 0) {
		int e = -errno;
		timer_delete(*timer);
		return e;
	}
	return 0;
}

enum { TEARDOWN_STACK = 64 * 1024 };

/* What vm_detach_teardown() needs, made while mmap and pipe are still
 * allowed.  Best effort: without it the kernel tears down at exit. */
static void prepare_teardown(struct vm *vm)
{
	void *stack = mmap(NULL, TEARDOWN_STACK, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (stack == MAP_FAILED)
		return;
	if (pipe(vm->teardown_pipe) < 0) {
		munmap(stack, TEARDOWN_STACK);
		return;
	}
	vm->teardown_stack = stack;
}

/* The drop phase (docs/jail.md): every resource is acquired and no guest
 * instruction has run.  Capabilities go for the whole process before any
 * vCPU thread exists (threads copy their creator's); the filters are
 * built here, once, and each vCPU thread loads its own in on_ready(). */
static int drop_privileges(struct vm *vm, char *msg, size_t len)
{
	prepare_teardown(vm);
	/* malloc after the drop (a snapshot's state file, the API's bodies) */
	jail_malloc_on_brk();
	int r = jail_drop_caps();
	if (r) {
		snprintf(msg, len, "cannot drop capabilities: %s", strerror(-r));
		return r;
	}
	r = jail_filter_build(&vm->vmm_filter, JAIL_ROLE_VMM, vm->seccomp);
	if (!r && (vm->nr_vcpus > 1 || vm->threaded))
		r = jail_filter_build(&vm->vcpu_filter, JAIL_ROLE_VCPU, vm->seccomp);
	if (r)
		snprintf(msg, len, "cannot build the seccomp filters: %s", strerror(-r));
	return r;
}

/* Start the timeout and drop privileges: the first half of every run.
 * 0, or -errno and the VM is stopped with the reason. */
static int prepare(struct vm *vm)
{
	char msg[128];
	if (vm->cfg->timeout_ms) {
		int r = arm_timeout(vm, &vm->timeout_timer);
		if (r) {
			snprintf(msg, sizeof(msg), "cannot arm the timeout: %s", strerror(-r));
			vm_stop(vm, EXIT_HOST, msg);
			return r;
		}
		vm->timed = true;
	}
	/* The guest's timer holds the deadline now (and the drop is next:
	 * the start-up timer's handler is no sandboxed thread's business). */
	startup_timeout_disarm();
	int r = drop_privileges(vm, msg, sizeof(msg));
	if (r)
		vm_stop(vm, EXIT_HOST, msg);
	return r;
}

/* vCPU 0's thread (vm_start), created on the CPU this thread runs on.
 * Left to the scheduler, a new thread often goes to the other CPU: idle,
 * whose wake-up costs 0.2-1.9 ms on these nested hosts (an IPI through the
 * outer hypervisor), or busy, where it queues behind another process.
 * Here it runs at once (measured: before pthread_create returns), and
 * this thread's remaining work (its filter, the API's reply) waits for it
 * or moves.  Only the first placement changes: the thread takes back this
 * thread's CPUs in on_ready(), this thread right after pthread_create. */
static int start_vcpu0_here(struct vm *vm)
{
	cpu_set_t here;
	int cpu = sched_getcpu();
	CPU_ZERO(&vm->vcpu0_cpus);
	if (cpu >= 0 && cpu < CPU_SETSIZE &&
	    !sched_getaffinity(0, sizeof(vm->vcpu0_cpus), &vm->vcpu0_cpus)) {
		CPU_ZERO(&here);
		CPU_SET(cpu, &here);
		if (CPU_COUNT(&vm->vcpu0_cpus) < 2 || sched_setaffinity(0, sizeof(here), &here))
			CPU_ZERO(&vm->vcpu0_cpus); /* one CPU anyway, or not allowed */
	}
	int r = vcpu_start(&vm->vcpus[0], &exit_ops, vm);
	if (CPU_COUNT(&vm->vcpu0_cpus))
		(void)sched_setaffinity(0, sizeof(vm->vcpu0_cpus), &vm->vcpu0_cpus);
	return r;
}

/* The thread vm_vcpu0_thread_make() makes: sandboxed at once, then it
 * waits for a VM whose vCPU 0 it runs (or for the process's end). */
static void *vcpu0_thread_main(void *arg)
{
	struct vm_vcpu0_thread *t = arg;
	/* Capabilities are per thread: this one drops its own (the vmm
	 * thread drops the process's at the start); then its filter, for
	 * good: from here it makes only the vcpu role's syscalls. */
	int r = jail_drop_caps();
	if (!r)
		r = jail_filter_apply(&t->filter);
	pthread_mutex_lock(&t->lock);
	t->state = r ? r : 1;
	while (!r && !t->vm)
		pthread_cond_wait(&t->cv, &t->lock);
	struct vm *vm = t->vm;
	pthread_mutex_unlock(&t->lock);
	if (vm)
		vcpu_run(&vm->vcpus[0], &exit_ops, vm);
	return NULL;
}

int vm_vcpu0_thread_make(struct vm_vcpu0_thread *t, enum jail_seccomp_mode seccomp)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cv, NULL);
	/* Built here: freeing it on that thread could trim the heap (brk is
	 * not in the vcpu role). */
	int r = jail_filter_build(&t->filter, JAIL_ROLE_VCPU, seccomp);
	if (r)
		return r;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024); /* as vcpu_start's */
	r = -pthread_create(&t->thread, &attr, vcpu0_thread_main, t);
	pthread_attr_destroy(&attr);
	if (r)
		jail_filter_free(&t->filter);
	return r;
}

/* vCPU 0 onto the thread made ahead, which must be waiting: woken on this
 * CPU, for the reason start_vcpu0_here() gives, then given back its CPUs
 * (it cannot change them itself: its filter has no sched_setaffinity). */
static void hand_vcpu0(struct vm *vm, struct vm_vcpu0_thread *t)
{
	cpu_set_t all, here;
	int cpu = sched_getcpu();
	bool pinned = false;
	if (cpu >= 0 && cpu < CPU_SETSIZE &&
	    !pthread_getaffinity_np(t->thread, sizeof(all), &all) && CPU_COUNT(&all) > 1 &&
	    CPU_ISSET(cpu, &all)) {
		CPU_ZERO(&here);
		CPU_SET(cpu, &here);
		pinned = !pthread_setaffinity_np(t->thread, sizeof(here), &here);
	}
	vm->vcpu0_thread = t;
	pthread_mutex_lock(&t->lock);
	t->vm = vm;
	pthread_mutex_unlock(&t->lock);
	pthread_cond_signal(&t->cv);
	if (pinned)
		(void)pthread_setaffinity_np(t->thread, sizeof(all), &all);
}

/* vCPUs first..n-1 on their own threads.  -errno when one could not
 * start (the VM is stopped then); a guest that stops itself meanwhile
 * (vCPU 0 may run before this returns) is no failure. */
static int start_threads(struct vm *vm, unsigned first, struct vm_vcpu0_thread *t)
{
	char msg[128];
	int failed = 0;
	for (unsigned i = first; i < vm->nr_vcpus && !atomic_load(&vm->stopping); i++) {
		int r = 0;
		if (i == 0 && t)
			hand_vcpu0(vm, t);
		else
			r = i == 0 ? start_vcpu0_here(vm)
				   : vcpu_start(&vm->vcpus[i], &exit_ops, vm);
		if (r) {
			snprintf(msg, sizeof(msg), "vcpu%u: cannot start thread: %s", i,
				 strerror(-r));
			vm_stop(vm, EXIT_HOST, msg);
			failed = r;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &vm->stats.t_running);
	return failed;
}

static void finish(struct vm *vm)
{
	if (vm->timed)
		timer_delete(vm->timeout_timer);
	vm->timed = false;
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_join(&vm->vcpus[i]);
	if (vm->vcpu0_thread) {
		pthread_join(vm->vcpu0_thread->thread, NULL);
		jail_filter_free(&vm->vcpu0_thread->filter);
		vm->vcpu0_thread = NULL;
	}
}

int vm_run(struct vm *vm)
{
	/* Devices served by the event loop need the vmm thread: the boot
	 * vCPU gets a thread of its own. */
	if (vm->ev.nr_sources) {
		int r = vm_start(vm);
		if (r) {
			finish(vm);
			return r;
		}
		return vm_wait(vm);
	}
	int r = prepare(vm);
	if (r) {
		finish(vm);
		return r;
	}
	/* APs first: they wait for INIT/SIPI in the kernel anyway. */
	(void)start_threads(vm, 1, NULL);
	if (!atomic_load(&vm->stopping))
		vcpu_run(&vm->vcpus[0], &exit_ops, vm);
	/* vCPU 0 only returns once the VM is stopping (or it stopped it). */
	if (!atomic_load(&vm->stopping))
		vm_stop(vm, EXIT_HOST, "vcpu0: stopped for no reason");
	finish(vm);
	return 0;
}

int vm_start(struct vm *vm)
{
	return vm_start_on(vm, NULL);
}

int vm_start_on(struct vm *vm, struct vm_vcpu0_thread *t)
{
	if (t) {
		pthread_mutex_lock(&t->lock);
		bool waiting = t->state == 1 && !t->vm; /* not setting up, failed, or taken */
		pthread_mutex_unlock(&t->lock);
		if (!waiting)
			t = NULL;
	}
	vm->threaded = true;
	/* The timeout's signal lands on this thread, in epoll_wait. */
	int r = vcpu_kick_init();
	if (r) {
		vm_stop(vm, EXIT_HOST, "cannot install the kick signal's handler");
		return r;
	}
	r = prepare(vm);
	if (r)
		return r;
	if (vm->start_paused) {
		/* A restored VM that waits for "Resumed": the vCPUs park before
		 * their first KVM_RUN. */
		for (unsigned i = 0; i < vm->nr_vcpus; i++)
			vcpu_pause(&vm->vcpus[i]);
		vm->paused = true;
	}
	int failed = start_threads(vm, 0, t);
	/* After the threads exist: they load the vCPU filter themselves
	 * and must not inherit this one on top of it. */
	r = jail_filter_apply(&vm->vmm_filter);
	if (r) {
		char msg[96];
		snprintf(msg, sizeof(msg), "cannot load the vmm seccomp filter: %s", strerror(-r));
		vm_stop(vm, EXIT_HOST, msg);
		failed = failed ? failed : r;
	}
	/* Started, even if the guest has stopped already: vm_wait() says how. */
	return failed;
}

static bool stop_test(void *opaque)
{
	return vm_check_stop(opaque) > 0;
}

int vm_wait(struct vm *vm)
{
	int r = ev_run(&vm->ev, stop_test, vm);
	if (r) {
		char msg[96];
		snprintf(msg, sizeof(msg), "event loop: %s", strerror(-r));
		vm_stop(vm, EXIT_HOST, msg);
	}
	finish(vm);
	return r;
}

int vm_pause(struct vm *vm)
{
	if (atomic_load(&vm->stopping))
		return -ESHUTDOWN;
	if (vm->paused)
		return -EALREADY;
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_pause(&vm->vcpus[i]);
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_wait_parked(&vm->vcpus[i]);
	vm->paused = true;
	return atomic_load(&vm->stopping) ? -ESHUTDOWN : 0;
}

int vm_resume(struct vm *vm)
{
	if (atomic_load(&vm->stopping))
		return -ESHUTDOWN;
	if (!vm->paused)
		return -EALREADY;
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		vcpu_resume(&vm->vcpus[i]);
	vm->paused = false;
	return 0;
}

/* The child that inherits the VM: it waits for ember to exit (the pipe's
 * write end closes then), and its own exit drops the last references to
 * the KVM objects.  Shares ember's memory (CLONE_VM), so it must touch
 * nothing but its stack and raw syscalls; it runs under the main thread's
 * seccomp filter, which allows it close, read and exit_group. */
static int teardown_child(void *arg)
{
	const int *p = arg;
	char c;
	/* Our copies of the caller's stdio first: a reader must see EOF the
	 * moment ember exits (a jail has no /dev/null to dup2 over them). */
	close(STDIN_FILENO);
	close(STDOUT_FILENO);
	close(STDERR_FILENO);
	close(p[1]); /* our copy of the write end: EOF must mean ember exited */
	while (read(p[0], &c, 1) < 0 && errno == EINTR)
		;
	_exit(0);
}

void vm_detach_teardown(struct vm *vm)
{
	if (vm->vm_fd < 0 || !vm->teardown_stack)
		return;
	fflush(NULL);
	/* exit signal 0: nobody waits for it; init reaps it. */
	pid_t pid = clone(teardown_child, (char *)vm->teardown_stack + TEARDOWN_STACK, CLONE_VM,
			  vm->teardown_pipe);
	close(vm->teardown_pipe[0]);
	if (pid < 0)
		close(vm->teardown_pipe[1]);
	/* The child has its own copies of every fd: ours close at our exit
	 * without tearing anything down.  Keep the write end open until then. */
}
