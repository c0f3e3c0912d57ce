/* The virtio test guest's parts (virtio.c: modes and the command line;
 * virtio_vsock.c: the vsock mode) on the driver in virtio_drv.h. */
#ifndef GUEST_VIRTIO_TEST_H
#define GUEST_VIRTIO_TEST_H

#include "virtio_drv.h"

/* `key=` from the command line as a number, def when absent or bad. */
u64 arg_u64(const char *key, u64 def);
/* `key=` is exactly val (def when absent). */
int arg_is(const char *key, const char *val, int def);
/* The first device with this id, set up by main; NULL (and a line
 * saying so) when there is none. */
struct vdev *find_dev(u32 id);

int do_vsock(void); /* test=vsock */

#endif
