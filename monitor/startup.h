/* --timeout during start-up.  vm_run()'s timer bounds the guest's run;
 * before it, reading the configuration, loading the kernel and opening
 * disks can wait on the host too (a slow or hung file system, a path that
 * blocks).  Such a step cannot be unwound, only ended, so this timer ends
 * the process: start-up holds nothing that the exit does not release.
 * The same deadline carries over to the guest's timer (vm->deadline_ns),
 * so one --timeout bounds the whole run. */
#ifndef EMBER_STARTUP_H
#define EMBER_STARTUP_H

#include <stdint.h>

/* Arm (or move) a one-shot timer for deadline_ns (CLOCK_MONOTONIC, the
 * clock of ev_now_ns()), aimed at the calling thread (the main thread,
 * which stays unsandboxed until vm_run()'s drop phase disarms this).  On
 * expiry its handler writes "ember: timeout after SECS s during start-up
 * (PHASE)" on stderr and _exit()s with EXIT_TIMEOUT.  timeout_ms is only
 * for that message.  0 or -errno. */
__attribute__((warn_unused_result)) int startup_timeout_arm(uint64_t deadline_ns,
							    uint64_t timeout_ms);

/* Drop the timer: vm_run() and vm_start() call this once the guest's own
 * timer holds the deadline, before the drop phase.  Safe when none is
 * armed. */
void startup_timeout_disarm(void);

/* What start-up is doing now, for the message: a string with static
 * storage ("loading the kernel").  Any time, armed or not. */
void startup_phase(const char *what);

#endif
