// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The driver's half of the start, reset and stop handshake of docs/static-virtio.md, the
 * checks of the device's state line, and how a link fails.
 *
 * The device may be hostile: what it writes is read once, checked, and never waited for
 * without a bound. A link that fails says why in the kernel log, tells the device (our line
 * says FAILED), and breaks its virtqueues; nothing else of the partition is touched.
 */

#include <linux/delay.h>
#include <linux/io.h>
#include <linux/jiffies.h>
#include <linux/module.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "trapless_virtio.h"

unsigned int tlv_let_go_ms = 1000;
module_param_named(let_go_ms, tlv_let_go_ms, uint, 0644);
MODULE_PARM_DESC(let_go_ms, "how long to wait for a device to let go of the rings (ms)");

u32 tlv_read32(struct tlv_link *link, size_t offset)
{
	return le32_to_cpu(READ_ONCE(*(__le32 *)(link->window + offset)));
}

static void tlv_write32(struct tlv_link *link, size_t offset, u32 value)
{
	WRITE_ONCE(*(__le32 *)(link->window + offset), cpu_to_le32(value));
}

/* Our state word, after everything written before it. */
static void tlv_say(struct tlv_link *link, u32 state)
{
	/* Everything written to the window before (rings, generation) is seen before the state. */
	smp_mb();
	tlv_write32(link, TLV_DRIVER_STATE + TLV_STATE, state);
}

/*
 * Rings the device about @queue: the ring writes are visible first (DSB ST), then one 32-bit
 * store of the EventID to GITS_TRANSLATER. Nothing if the device polls.
 */
void tlv_ring(struct tlv_link *link, unsigned int queue)
{
	struct tlv_queue *q = &link->queues[queue];

	if (!q->has_event)
		return;
	/* DSB ST: the ring writes complete before the device can take the interrupt. */
	wmb();
	writel_relaxed(q->event, link->translater);
	atomic_long_inc(&link->rung);
}

bool tlv_failed(struct tlv_link *link)
{
	return test_bit(TLV_LINK_FAILED, &link->flags);
}

void tlv_fail_work(struct work_struct *work)
{
	struct tlv_link *link = container_of(work, struct tlv_link, fail_work);

	/* Takes a lock the virtqueues' creation holds: never from the interrupt. */
	if (link->registered)
		virtio_break_device(&link->vdev);
}

/*
 * Fails the link, once: says why, tells the device, and breaks the virtqueues (their drivers'
 * requests and kicks then fail). From any context.
 */
void tlv_fail(struct tlv_link *link, const char *fmt, ...)
{
	va_list args;

	if (test_and_set_bit(TLV_LINK_FAILED, &link->flags))
		return;
	va_start(args, fmt);
	vsnprintf(link->reason, sizeof(link->reason), fmt, args);
	va_end(args);
	dev_err(&link->pdev->dev, "link %s failed: %s\n", link->name, link->reason);
	WRITE_ONCE(link->started, false);
	tlv_say(link, TLV_FAILED);
	schedule_work(&link->fail_work);
}

/*
 * Checks the device's line while our generation runs: it must serve ours, or, until it first
 * does, none yet (READY, or RESET if the device partition has not opened the link yet); and
 * once it served ours it must not let go while we run. Fails the link otherwise.
 */
bool tlv_device_ok(struct tlv_link *link)
{
	u32 state, generation, error;

	if (tlv_failed(link))
		return false;
	state = tlv_read32(link, TLV_DEVICE_STATE + TLV_STATE);
	/* The device writes its generation, then its state: read them the other way round. */
	smp_rmb();
	generation = tlv_read32(link, TLV_DEVICE_STATE + TLV_GENERATION);
	if (state == TLV_READY && generation == link->generation && generation) {
		WRITE_ONCE(link->served, true);
		return true;
	}
	if ((state == TLV_READY || state == TLV_RESET) && generation == 0 &&
	    !READ_ONCE(link->served))
		return true;
	if (!READ_ONCE(link->started))
		return true;
	if (state == TLV_FAILED) {
		error = tlv_read32(link, TLV_DEVICE_STATE + TLV_ERROR);
		tlv_fail(link, "the device says FAILED (error %#x%s)", error,
			 error == TLV_ERROR_RING ? ": the driver broke a ring rule" :
			 error == TLV_ERROR_HEADER ? ": the header is not its device tree's" : "");
	} else if (state != TLV_READY) {
		tlv_fail(link, "the device's state line says %#x", state);
	} else if (generation == 0) {
		tlv_fail(link, "the device let go of generation %u while it ran", link->generation);
	} else {
		tlv_fail(link, "the device serves generation %u, the driver's is %u", generation,
			 link->generation);
	}
	return false;
}

/*
 * Whether @queue's virtqueue still works: Linux's virtio_ring checks every used element the
 * device writes (an id that names no chain in flight breaks the queue, and it says so), but
 * only when a driver takes it, which may be after the interrupt. Fails the link otherwise.
 */
bool tlv_queue_ok(struct tlv_link *link, unsigned int queue)
{
	struct virtqueue *vq = READ_ONCE(link->queues[queue].vq);

	if (!vq || !virtqueue_is_broken(vq) || tlv_failed(link))
		return !tlv_failed(link);
	tlv_fail(link, "queue %u: the device broke the used ring (virtio_ring says how)", queue);
	return false;
}

/*
 * Every second while the link runs: the device's line and the queues, for a device that fails
 * or breaks a ring where no interrupt follows (a request it never answers is not seen here).
 */
void tlv_watch(struct work_struct *work)
{
	struct tlv_link *link = container_of(to_delayed_work(work), struct tlv_link, watch);
	unsigned int i;

	if (!READ_ONCE(link->started))
		return;
	for (i = 0; i < link->queue_count; i++)
		tlv_queue_ok(link, i);
	if (tlv_device_ok(link))
		schedule_delayed_work(&link->watch, HZ);
}

/* Whether the device has let go of our generation's rings, from one look at its line. */
static bool tlv_has_let_go(struct tlv_link *link)
{
	u32 state = tlv_read32(link, TLV_DEVICE_STATE + TLV_STATE);
	u32 generation;

	/* As in tlv_device_ok(): the state first. */
	smp_rmb();
	generation = tlv_read32(link, TLV_DEVICE_STATE + TLV_GENERATION);
	if (generation != link->generation || state != TLV_READY) {
		/* Nothing of ours is reused before the device's last ring writes are seen. */
		smp_mb();
		return true;
	}
	return false;
}

/*
 * Says @state (RESET to start over, STOPPED when done) and, if the device may be serving our
 * rings, rings it and waits until it has let go of them, for at most let_go_ms (steps 3 and 5).
 * A device that does not let go in time fails the link. Process context.
 */
int tlv_let_go(struct tlv_link *link, u32 state)
{
	unsigned long deadline;

	WRITE_ONCE(link->started, false);
	WRITE_ONCE(link->served, false);
	cancel_delayed_work_sync(&link->watch);
	tlv_say(link, state);
	/* Our word is visible before the device looks, and before we look for its answer. */
	smp_mb();
	if (!link->generation) {
		/* A device waiting for us to stop must look once to see it. */
		if (state == TLV_STOPPED)
			tlv_ring(link, 0);
		return 0;
	}
	tlv_ring(link, 0);
	deadline = jiffies + msecs_to_jiffies(tlv_let_go_ms);
	while (!tlv_has_let_go(link)) {
		if (time_after(jiffies, deadline)) {
			tlv_fail(link, "the device did not let go of generation %u within %u ms",
				 link->generation, tlv_let_go_ms);
			return -ETIMEDOUT;
		}
		usleep_range(50, 200);
	}
	return 0;
}

/*
 * Starts a new generation over the rings as they are (DRIVER_OK): the generation, then READY,
 * each after everything written before; then rings every queue, since buffers made available
 * before now were not announced.
 */
void tlv_start(struct tlv_link *link)
{
	unsigned int i;

	if (tlv_failed(link) || link->stopped)
		return;
	link->generation = link->generation + 1 ?: 1;
	WRITE_ONCE(link->served, false);
	/* The rings set up so far are seen before the generation that announces them. */
	smp_mb();
	tlv_write32(link, TLV_DRIVER_STATE + TLV_GENERATION, link->generation);
	tlv_say(link, TLV_READY);
	WRITE_ONCE(link->started, true);
	for (i = 0; i < link->queue_count; i++)
		tlv_ring(link, i);
	schedule_delayed_work(&link->watch, HZ);
}

/* Linux is going down: the link is done (STOPPED), whatever state it is in. */
void tlv_stop(struct tlv_link *link)
{
	link->stopped = true;
	if (tlv_let_go(link, TLV_STOPPED) == 0 || !tlv_failed(link))
		return;
	/* A failed link says STOPPED all the same: its device may wait for that. */
	tlv_say(link, TLV_STOPPED);
	tlv_ring(link, 0);
}
