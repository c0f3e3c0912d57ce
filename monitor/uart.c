/* 8250/16550A UART on COM1: what Linux's 8250 driver, earlyprintk and
 * small unikernels use.  Transmit only; THR writes go straight to out_fd. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "monitor/legacy.h"

enum { RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };
#define LCR_DLAB 0x80
#define IER_THRI 0x02
#define IIR_NONE 0x01
#define IIR_THRI 0x02
#define IIR_FIFO 0xc0 /* FIFOs enabled: a 16550A */
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define MCR_LOOP 0x10
#define MSR_DCD_DSR_CTS 0xb0

void console_write(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (fd >= 0 && len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w, len -= (size_t)w;
	}
}

static void update_irq(struct uart *u)
{
	if (u->irq && u->thri_pending && (u->ier & IER_THRI))
		u->irq(u->irq_opaque, u->irq_line);
}

static int uart_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct uart *u = opaque;
	bool first = false;

	if (len != 1) {
		/* 8250 registers are bytes; wider accesses read all ones. */
		if (!is_write)
			memset(data, 0xff, len);
		return 0;
	}
	pthread_mutex_lock(&u->lock);
	bool dlab = u->lcr & LCR_DLAB;
	if (is_write) {
		uint8_t v = data[0];
		switch (off) {
		case RBR_THR:
			if (dlab) {
				u->dll = v;
			} else if (!(u->mcr & MCR_LOOP)) {
				console_write(u->out_fd, &v, 1);
				u->bytes_out++;
				first = !u->wrote;
				u->wrote = true;
				u->thri_pending = true; /* sent at once: THR is empty again */
				update_irq(u);
			}
			break;
		case IER:
			if (dlab) {
				u->dlm = v;
			} else {
				bool was = u->ier & IER_THRI;
				u->ier = v & 0x0f;
				/* Enabling THRI while THR is empty raises it at once,
				 * which is how drivers kick off transmission. */
				if (!was && (u->ier & IER_THRI)) {
					u->thri_pending = true;
					update_irq(u);
				}
			}
			break;
		case LCR:
			u->lcr = v;
			break;
		case MCR:
			u->mcr = v & 0x1f;
			break;
		case SCR:
			u->scr = v;
			break;
		default: /* FCR, LSR, MSR: nothing to keep */
			break;
		}
	} else {
		uint8_t v = 0;
		switch (off) {
		case RBR_THR:
			v = dlab ? u->dll : 0;
			break;
		case IER:
			v = dlab ? u->dlm : u->ier;
			break;
		case IIR_FCR:
			if ((u->ier & IER_THRI) && u->thri_pending) {
				v = IIR_THRI | IIR_FIFO;
				u->thri_pending = false; /* reading IIR acknowledges it */
			} else {
				v = IIR_NONE | IIR_FIFO;
			}
			break;
		case LCR:
			v = u->lcr;
			break;
		case MCR:
			v = u->mcr;
			break;
		case LSR:
			v = LSR_THRE | LSR_TEMT;
			break;
		case MSR:
			v = (u->mcr & MCR_LOOP) ? (uint8_t)((u->mcr & 0x0f) << 4) : MSR_DCD_DSR_CTS;
			break;
		case SCR:
			v = u->scr;
			break;
		}
		data[0] = v;
	}
	pthread_mutex_unlock(&u->lock);
	if (first && u->first_output)
		u->first_output(u->first_opaque);
	return 0;
}

int uart_init(struct uart *u, struct bus *pio, uint16_t base, unsigned irq_line, int out_fd,
	      irq_fn irq, void *irq_opaque)
{
	memset(u, 0, sizeof(*u));
	pthread_mutex_init(&u->lock, NULL);
	u->out_fd = out_fd;
	u->irq = irq;
	u->irq_opaque = irq_opaque;
	u->irq_line = irq_line;
	u->lcr = 0x03; /* 8N1 */
	u->mcr = 0x08; /* OUT2 */
	u->dll = 0x0c; /* 9600 baud */
	return bus_register(pio, base, 8, uart_io, u, "com1");
}

void uart_save(struct uart *u, struct uart_state *s)
{
	pthread_mutex_lock(&u->lock);
	*s = (struct uart_state){u->ier, u->lcr, u->mcr, u->scr, u->dll, u->dlm, u->thri_pending, 0};
	pthread_mutex_unlock(&u->lock);
}

void uart_restore(struct uart *u, const struct uart_state *s)
{
	pthread_mutex_lock(&u->lock);
	u->ier = s->ier, u->lcr = s->lcr, u->mcr = s->mcr, u->scr = s->scr;
	u->dll = s->dll, u->dlm = s->dlm, u->thri_pending = s->thri_pending != 0;
	/* The guest has written before: --stats does not count a restored
	 * guest's next byte as its first. */
	pthread_mutex_unlock(&u->lock);
}
