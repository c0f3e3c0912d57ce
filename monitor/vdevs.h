/* The VM's virtio-mmio devices, made from its configuration: drives,
 * then net devices, then vsock, then rng, one 4 KiB slot each from
 * LAYOUT_VIRTIO_MMIO with GSIs from VDEVS_FIRST_GSI, announced to the
 * guest on its command line as Firecracker does.  Each device is made by
 * its own constructor (virtio/blk.h, net.h, vsock.h, rng.h) from
 * parameters translated from its configuration section; after that the
 * monitor knows it only by its ops (virtio/virtio.h). */
#ifndef EMBER_VDEVS_H
#define EMBER_VDEVS_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "monitor/boot/loader.h"
#include "virtio/virtio.h"

#define VDEVS_FIRST_GSI 5
#define VDEVS_MAX 19 /* GSIs 5..23 of the IOAPIC */

struct vm;
struct vdevs;

/* How many virtio devices cfg asks for (0 for hvt guests, whose block
 * and net sections are manifest devices). */
unsigned vdevs_count(const struct vm_config *cfg, bool hvt);

/* Append " virtio_mmio.device=4K@0xADDR:GSI" for each device to buf
 * (holding len bytes so far, NUL-terminated, size bytes in all).
 * Returns the new length, or (size_t)-1 when it does not fit. */
size_t vdevs_cmdline(const struct vm_config *cfg, bool hvt, char *buf, size_t len, size_t size);

/* The devices' slots for the ACPI DSDT (out holds VDEVS_MAX); returns
 * how many. */
unsigned vdevs_acpi(const struct vm_config *cfg, bool hvt, struct acpi_mmio_dev *out);

/* Make every device: open its backend (disk file, tap, socket), set up
 * the transport (ioeventfds, irqfd on vm->vm_fd, watched on vm->ev) and
 * register its MMIO slot and its parts (vm_part_add: the transport's
 * VDEV i, the device's own VDVX i).  Before the drop phase.  0, -EINVAL
 * for a configuration a device refuses, another -errno for host trouble;
 * the reason in err (naming the device). */
__attribute__((warn_unused_result)) int vdevs_build(struct vm *vm, char *err, size_t errlen);

/* Close everything vdevs_build() made (safe when it failed halfway). */
void vdevs_destroy(struct vm *vm);

/* Firecracker's PATCH of a running device's rate limiters: drive or net
 * `index` (its place among cfg's blocks or nets) gets a (the drive's, or
 * the net's rx) and b (the net's tx; NULL for a drive) through its
 * set_limits op: a bucket whose settings are unchanged keeps its state.
 * vmm thread.  0, -ENOENT when there is no such virtio device, or the
 * op's -errno. */
__attribute__((warn_unused_result)) int vdevs_set_limits(struct vm *vm, bool net, unsigned index,
							 const struct cfg_rate *a,
							 const struct cfg_rate *b);

/* Device i (0..n-1) for metrics (virtio_dev_counters) and snapshots, or
 * NULL past the end. */
struct virtio_dev *vdevs_get(struct vm *vm, unsigned i);

/* Before a migration takes the paused VM's state: each device that can
 * makes its writes durable where another host reads them (virtio-blk:
 * fdatasync).  The vmm thread.  0 or the first -errno. */
__attribute__((warn_unused_result)) int vdevs_flush(struct vm *vm);

/* Let every device run what its restore left pending (a post-copy
 * target's, gmem's partial): from any thread, no lock taken. */
void vdevs_kick(struct vm *vm);

/* After a migration's target resumed: each device that can tells the
 * network where the guest is now (virtio-net: a gratuitous RARP through
 * its tap).  Any thread; best effort. */
void vdevs_announce(struct vm *vm);

#endif
