/* The loop's side of a move (move.h): a VM's state as a move changes it.
 * The move threads never touch a struct ed_vm; they call these through
 * mv_on_loop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ha/emberd/move.h"

static void progress(struct ed_vm *vm, const char *to, const char *phase)
{
	snprintf(vm->move_to, sizeof(vm->move_to), "%s", to);
	snprintf(vm->move_phase, sizeof(vm->move_phase), "%s", phase);
	vm->move_bytes = 0;
	vm->move_since_ms = ed_now_ms();
}

int ed_vm_move_out_begin(struct ed_vm *vm, const char *to, char *sock, size_t socklen, char *why,
			 size_t whylen)
{
	if (vm->state != ED_RUNNING || vm->pid <= 0 || vm->moving) {
		snprintf(why, whylen, "%s is %s%s here", vm->f.name, ed_state_name(vm->state),
			 vm->moving ? " and already moving" : "");
		return -EINVAL;
	}
	vm->moving = ED_MOVE_OUT;
	vm->move_left = false;
	progress(vm, to, "connecting");
	snprintf(sock, socklen, "%s", vm->api_sock);
	return 0;
}

void ed_vm_move_out_end(struct ed_vm *vm, bool left, const char *cause)
{
	char why[ED_ERR_MAX];
	vm->move_phase[0] = '\0';
	if (left) {
		snprintf(vm->remote_host, sizeof(vm->remote_host), "%s", vm->move_to);
		if (vm->pid > 0) {
			vm->move_left = true; /* its exit (GOGO sent) is the move's */
			return;
		}
		vm->moving = ED_MOVE_NONE;
		ed_vm_set_remote(vm, vm->move_to);
		return;
	}
	vm->moving = ED_MOVE_NONE;
	if (vm->pid > 0)
		return; /* the source VMM ran on (it resumes by itself when a move fails) */
	/* its ember exited during the move and never handed over */
	if (ed_vm_start(vm->h, vm, ED_HOW_POLICY, cause, why, sizeof(why)))
		ed_event(vm->h, vm->f.name, "start-failed", "%s: %s", cause, why);
}

int ed_vm_move_in_begin(struct ed_vm *vm, const char *from, pid_t *pid, char *why, size_t whylen)
{
	if (vm->pid > 0 || vm->moving) {
		snprintf(why, whylen, "%s is %s%s on the target", vm->f.name,
			 ed_state_name(vm->state), vm->moving ? " and moving" : "");
		return -EBUSY;
	}
	if (ed_host_fenced(vm->h)) {
		snprintf(why, whylen, "the target is fenced");
		return -EPERM;
	}
	vm->moving = ED_MOVE_IN;
	snprintf(vm->remote_host, sizeof(vm->remote_host), "%s", from);
	int r = ed_proc_launch(vm, NULL, why, whylen);
	if (r) {
		vm->moving = ED_MOVE_NONE;
		return r;
	}
	progress(vm, ed_host_name(vm->h), "receiving");
	vm->started_ms = ed_now_ms();
	vm->running_ms = 0;
	vm->stopping = false;
	char reason[ED_ERR_MAX];
	snprintf(reason, sizeof(reason), "receiving a live migration from %s", from);
	ed_vm_set_state(vm, ED_STARTING, reason);
	*pid = vm->pid;
	return 0;
}

void ed_vm_move_in_end(struct ed_vm *vm, bool ok)
{
	vm->move_phase[0] = '\0';
	if (!ok) {
		/* its exit removes the jail and marks it the source's again */
		if (vm->pidfd >= 0)
			syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
		return;
	}
	vm->moving = ED_MOVE_NONE;
	vm->running_ms = ed_now_ms();
	snprintf(vm->api_sock, sizeof(vm->api_sock), "/proc/%d/root/api.sock", (int)vm->pid);
	ed_vm_set_state(vm, ED_RUNNING, NULL);
	ed_snap_arm(vm);
}

void ed_vm_move_progress(struct ed_vm *vm, const char *phase, uint64_t bytes)
{
	if (!vm->moving)
		return;
	snprintf(vm->move_phase, sizeof(vm->move_phase), "%s", phase);
	vm->move_bytes = bytes;
}

void ed_vm_move_exited(struct ed_vm *vm)
{
	if (vm->moving == ED_MOVE_IN || vm->move_left) {
		/* the target's half is gone, or the source after its hand-over */
		vm->moving = ED_MOVE_NONE;
		vm->move_left = false;
		vm->stopping = false;
		vm->move_phase[0] = '\0';
		char host[ED_NAME_MAX + 1]; /* set_remote writes remote_host: not in place */
		snprintf(host, sizeof(host), "%s", vm->remote_host);
		ed_vm_set_remote(vm, host);
		return;
	}
	/* the source's ember exited mid-move: the move decides (it may have
	 * handed over) */
	ed_vm_set_state(vm, ED_STOPPED, "its ember exited during a move: the move decides");
}
