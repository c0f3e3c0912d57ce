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

/* The n-th (from 0) device with this id, or NULL (and a line). */
struct vdev *find_dev_nth(u32 id, unsigned nth);

int do_vsock(void);	 /* test=vsock */
int do_blkpattern(void); /* test=blkpattern (virtio_blkpat.c) */

/* virtio-blk (§5.2) */
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define BLK_WANTED (1ULL << VIRTIO_BLK_F_RO | 1ULL << VIRTIO_BLK_F_FLUSH)
#define SECTOR 512
#define BIG_READ 65536

/* One request: header, an optional data buffer (len 0: none), status.
 * The status byte, or -1 on timeout. */
int blk_req(struct vdev *d, u32 type, u64 sector, void *buf, u32 len);

#endif
