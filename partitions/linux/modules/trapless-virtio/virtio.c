// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The virtio transport of a static link: features fixed (the driver takes them all or the
 * link is refused), the configuration space as the window held it at probe, the status byte
 * kept here, queues where the layout puts them in the window, a doorbell store per notification
 * and an LPI per queue for the device's.
 */

#include <linux/interrupt.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>

#include "trapless_virtio.h"

static void tlv_get(struct virtio_device *vdev, unsigned int offset, void *buf, unsigned int len)
{
	struct tlv_link *link = to_tlv_link(vdev);
	unsigned int have = 0;

	/* The private copy: the device may scribble over the window's without effect. */
	if (offset < link->config_size)
		have = min_t(unsigned int, len, link->config_size - offset);
	memcpy(buf, link->config + offset, have);
	memset(buf + have, 0, len - have);
}

static void tlv_set(struct virtio_device *vdev, unsigned int offset, const void *buf,
		    unsigned int len)
{
	dev_warn_once(&vdev->dev, "the configuration space of a static link is read-only\n");
}

static u32 tlv_generation(struct virtio_device *vdev)
{
	/* The configuration never changes. */
	return 0;
}

static u8 tlv_get_status(struct virtio_device *vdev)
{
	return to_tlv_link(vdev)->status;
}

static void tlv_set_status(struct virtio_device *vdev, u8 status)
{
	struct tlv_link *link = to_tlv_link(vdev);
	u8 was = link->status;

	link->status = status;
	if ((status & VIRTIO_CONFIG_S_DRIVER_OK) && !(was & VIRTIO_CONFIG_S_DRIVER_OK))
		tlv_start(link);
}

static void tlv_reset(struct virtio_device *vdev)
{
	struct tlv_link *link = to_tlv_link(vdev);

	link->status = 0;
	if (!link->stopped)
		tlv_let_go(link, TLV_RESET);
}

static u64 tlv_get_features(struct virtio_device *vdev)
{
	return to_tlv_link(vdev)->features;
}

static int tlv_finalize_features(struct virtio_device *vdev)
{
	struct tlv_link *link = to_tlv_link(vdev);

	vring_transport_features(vdev);
	if (vdev->features != link->features) {
		dev_err(&link->pdev->dev,
			"link %s: the driver accepts features %#llx, the link fixes %#llx\n",
			link->name, vdev->features, link->features);
		return -EINVAL;
	}
	return 0;
}

static bool tlv_notify(struct virtqueue *vq)
{
	struct tlv_queue *queue = vq->priv;
	struct tlv_link *link = queue->link;

	if (!READ_ONCE(link->started))
		return !tlv_failed(link);
	if (!tlv_device_ok(link) || !tlv_queue_ok(link, queue->index))
		return false;
	tlv_ring(link, queue->index);
	return true;
}

/*
 * A queue's LPI. Any partition may ring any doorbell, so an interrupt may be spurious: it is
 * always handled (the core would turn off an interrupt that keeps finding nothing), and counted.
 */
static irqreturn_t tlv_interrupt(int irq, void *data)
{
	struct tlv_queue *queue = data;
	struct tlv_link *link = queue->link;

	atomic_long_inc(&link->taken);
	if (!READ_ONCE(link->started) || !tlv_device_ok(link)) {
		atomic_long_inc(&link->empty);
		return IRQ_HANDLED;
	}
	if (vring_interrupt(irq, queue->vq) == IRQ_NONE)
		atomic_long_inc(&link->empty);
	tlv_queue_ok(link, queue->index);
	return IRQ_HANDLED;
}

static void tlv_del_vqs(struct virtio_device *vdev)
{
	struct tlv_link *link = to_tlv_link(vdev);
	unsigned int i;

	/* The device lets go of the rings before they go (drivers reset first; make sure). */
	if (link->started)
		tlv_let_go(link, TLV_RESET);
	for (i = 0; i < link->queue_count; i++) {
		struct tlv_queue *queue = &link->queues[i];

		if (queue->irq_requested)
			free_irq(queue->irq, queue);
		queue->irq_requested = false;
		if (queue->vq)
			vring_del_virtqueue(queue->vq);
		queue->vq = NULL;
	}
}

static struct virtqueue *tlv_setup_vq(struct tlv_link *link, unsigned int index,
				      vq_callback_t *callback, const char *name, bool ctx)
{
	struct tlv_queue *queue = &link->queues[index];
	struct virtqueue *vq;
	int err;

	/* Fresh rings where the layout says (the device has let go of the old ones). */
	memset(link->window + queue->layout.desc, 0, queue->layout.end - queue->layout.desc);
	vq = vring_new_virtqueue(index, link->queue_size, TLV_PAGE, &link->vdev, true, ctx,
				 link->window + queue->layout.desc, tlv_notify, callback, name);
	if (!vq)
		return ERR_PTR(-ENOMEM);
	vq->priv = queue;
	queue->vq = vq;
	if (!callback)
		return vq;
	snprintf(queue->name, sizeof(queue->name), "%s-%s", link->name, name);
	err = request_irq(queue->irq, tlv_interrupt, 0, queue->name, queue);
	if (err) {
		vring_del_virtqueue(vq);
		queue->vq = NULL;
		return ERR_PTR(err);
	}
	queue->irq_requested = true;
	return vq;
}

static int tlv_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue *vqs[],
			vq_callback_t *callbacks[], const char * const names[], const bool *ctx,
			struct irq_affinity *desc)
{
	struct tlv_link *link = to_tlv_link(vdev);
	unsigned int i, queue = 0;

	if (tlv_failed(link))
		return -EIO;
	if (link->started) {
		dev_err(&link->pdev->dev, "link %s: queues set up while the link runs\n",
			link->name);
		return -EBUSY;
	}
	for (i = 0; i < nvqs; i++) {
		if (!names[i]) {
			vqs[i] = NULL;
			continue;
		}
		if (queue >= link->queue_count) {
			dev_err(&link->pdev->dev, "link %s: the driver wants more than its %u queues\n",
				link->name, link->queue_count);
			tlv_del_vqs(vdev);
			return -ENOENT;
		}
		vqs[i] = tlv_setup_vq(link, queue, callbacks[i], names[i], ctx ? ctx[i] : false);
		if (IS_ERR(vqs[i])) {
			int err = PTR_ERR(vqs[i]);

			tlv_del_vqs(vdev);
			return err;
		}
		queue++;
	}
	return 0;
}

static void tlv_synchronize_cbs(struct virtio_device *vdev)
{
	struct tlv_link *link = to_tlv_link(vdev);
	unsigned int i;

	for (i = 0; i < link->queue_count; i++)
		if (link->queues[i].irq_requested)
			synchronize_irq(link->queues[i].irq);
}

static const char *tlv_bus_name(struct virtio_device *vdev)
{
	return dev_name(&to_tlv_link(vdev)->pdev->dev);
}

const struct virtio_config_ops tlv_config_ops = {
	.get			= tlv_get,
	.set			= tlv_set,
	.generation		= tlv_generation,
	.get_status		= tlv_get_status,
	.set_status		= tlv_set_status,
	.reset			= tlv_reset,
	.find_vqs		= tlv_find_vqs,
	.del_vqs		= tlv_del_vqs,
	.synchronize_cbs	= tlv_synchronize_cbs,
	.get_features		= tlv_get_features,
	.finalize_features	= tlv_finalize_features,
	.bus_name		= tlv_bus_name,
};
