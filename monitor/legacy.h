/* Legacy x86 devices every guest kind may use: the 8250 UART on COM1, the
 * i8042's reset line, and ember's exit port.  Each registers its ports on
 * the PIO bus and reports through callbacks, so none knows struct vm. */
#ifndef EMBER_LEGACY_H
#define EMBER_LEGACY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/bus.h"

/* Called by a device to pulse an interrupt line (edge) on the irqchip. */
typedef void (*irq_fn)(void *opaque, unsigned irq);
/* Called by a device that stops the VM; code is ember's exit code. */
typedef void (*stop_fn)(void *opaque, int code, const char *why);
/* Called on the first byte the guest ever writes to the serial port. */
typedef void (*first_output_fn)(void *opaque);

/* Guest console output (the UART's bytes, hvt's PUTS) to fd: written
 * whole, retried on EINTR, dropped on any error: a reader that went away
 * or a full disk must not stop the guest.  fd < 0 discards. */
void console_write(int fd, const void *buf, size_t len);

/* 8250/16550A UART, transmit side and the registers drivers probe
 * (TI PC16550D data sheet).  No receive path yet: reads see no data. */
struct uart {
	pthread_mutex_t lock;
	int out_fd; /* -1: output discarded */
	uint8_t ier, lcr, mcr, scr, dll, dlm;
	bool thri_pending; /* "transmitter empty" interrupt owed to the guest */
	irq_fn irq;
	void *irq_opaque;
	unsigned irq_line;
	first_output_fn first_output;
	void *first_opaque;
	bool wrote;
	uint64_t bytes_out;
};

/* Register COM1 (8 ports at base) writing guest output to out_fd.  irq may
 * be NULL (no irqchip).  0 or -errno. */
__attribute__((warn_unused_result)) int uart_init(struct uart *u, struct bus *pio, uint16_t base,
						  unsigned irq_line, int out_fd, irq_fn irq,
						  void *irq_opaque);

/* The UART's registers: its snapshot record. */
struct uart_state {
	uint8_t ier, lcr, mcr, scr, dll, dlm, thri_pending, reserved;
};
_Static_assert(sizeof(struct uart_state) == 8, "a snapshot record");
void uart_save(struct uart *u, struct uart_state *s);
void uart_restore(struct uart *u, const struct uart_state *s);

/* i8042 keyboard controller: enough for Linux's probe to give up quietly
 * and for the reset command (0xFE to port 0x64), which stops the VM with
 * EXIT_GUEST_RESET, as Firecracker treats it. */
struct i8042 {
	stop_fn stop;
	void *opaque;
};
__attribute__((warn_unused_result)) int i8042_init(struct i8042 *k, struct bus *pio, stop_fn stop,
						   void *opaque);

/* Exit port (PORT_EXIT): a write of S stops the VM; ember exits with S&0xff. */
struct exit_port {
	stop_fn stop;
	void *opaque;
};
__attribute__((warn_unused_result)) int exit_port_init(struct exit_port *e, struct bus *pio,
						       stop_fn stop, void *opaque);

#endif
