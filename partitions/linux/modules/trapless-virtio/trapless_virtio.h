/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * trapless-virtio: a virtio transport for trapless's static virtio links (docs/static-virtio.md,
 * binding "trapless,virtio-static"), so that Linux's own virtio drivers run over a window of
 * shared memory and ITS doorbells, with no exit to the hypervisor per I/O.
 *
 * The numbers below are the binding's (partitions/virtio/src/binding.rs, header.rs, layout.rs).
 */
#ifndef TRAPLESS_VIRTIO_H
#define TRAPLESS_VIRTIO_H

#include <linux/atomic.h>
#include <linux/genalloc.h>
#include <linux/platform_device.h>
#include <linux/spinlock.h>
#include <linux/virtio.h>
#include <linux/workqueue.h>

/* The window: header, each side's state line, configuration generation and space, queues. */
#define TLV_HEADER		0x000
#define TLV_DRIVER_STATE	0x040
#define TLV_DEVICE_STATE	0x080
#define TLV_CONFIG_GENERATION	0x0c0
#define TLV_CONFIG		0x100
#define TLV_QUEUES		0x1000

/* Header fields. */
#define TLV_MAGIC		0x6f69747269766c74ULL	/* "tlvirtio", little-endian */
#define TLV_LAYOUT_VERSION	1
#define TLV_H_MAGIC		0x00
#define TLV_H_VERSION		0x08
#define TLV_H_DEVICE_ID		0x0c
#define TLV_H_FEATURES		0x10
#define TLV_H_QUEUE_COUNT	0x18
#define TLV_H_QUEUE_SIZE	0x1a
#define TLV_H_CONFIG_SIZE	0x1c
#define TLV_H_WINDOW_SIZE	0x20

/* A state line: state, generation, (device) error. */
#define TLV_STATE		0
#define TLV_GENERATION		4
#define TLV_ERROR		8

#define TLV_RESET		0
#define TLV_READY		1
#define TLV_FAILED		2
#define TLV_STOPPED		3

#define TLV_ERROR_HEADER	1
#define TLV_ERROR_RING		2

/* The layout: ring parts on 4 KiB pages, at least 64 KiB of buffer pool. */
#define TLV_PAGE		4096
#define TLV_MAX_QUEUES		4
#define TLV_MAX_QUEUE_SIZE	32768
#define TLV_MIN_POOL		(64 * 1024)
#define TLV_MAX_CONFIG		24

/* Where one queue lies in the window (offsets), as vring_init() also computes it. */
struct tlv_queue_layout {
	size_t desc;
	size_t avail;
	size_t used;
	size_t end;
};

struct tlv_link;

/* One virtqueue of a link: where it lies, how to ring the device, the LPI that rings us. */
struct tlv_queue {
	struct tlv_link *link;
	unsigned int index;
	struct tlv_queue_layout layout;
	struct virtqueue *vq;
	/* EventID that rings the device about this queue; has_event false if the device polls. */
	bool has_event;
	u32 event;
	/* The LPI the device's notifications raise here, the CPU taking it, its Linux irq. */
	u32 lpi;
	int cpu;
	unsigned int irq;
	bool irq_requested;
	char name[32];
};

/*
 * The bounce buffers: every buffer a driver maps for the device is copied into the window's
 * buffer pool (the device sees nothing else), and back when the device wrote it.
 */
struct tlv_bounce {
	struct gen_pool *pool;
	void *base;			/* the pool, as Linux maps the window */
	phys_addr_t phys;		/* and as the device addresses it */
	size_t size;
	/* Per 2^TLV_SLOT_ORDER bytes of pool: the caller's memory mapped there, or NULL. */
	void **origin;
	atomic_long_t in_use;		/* bytes allocated */
	atomic_long_t failures;		/* mappings the pool had no room for */
};

#define TLV_SLOT_ORDER		6

/* One link this partition drives. */
struct tlv_link {
	struct virtio_device vdev;
	struct platform_device *pdev;
	const char *name;		/* trapless,link */
	const char *kind;		/* net, block or console */

	void *window;
	phys_addr_t window_phys;
	size_t window_size;
	void __iomem *doorbell;		/* the doorbell page */
	void __iomem *translater;	/* GITS_TRANSLATER in it */

	u32 device_id;
	u64 features;
	u16 queue_count;
	u16 queue_size;
	u8 config[TLV_MAX_CONFIG];	/* checked against the window at probe, then only this */
	size_t config_size;
	struct tlv_queue queues[TLV_MAX_QUEUES];
	size_t pool_start;

	struct irq_domain *domain;
	struct tlv_bounce bounce;

	u8 status;			/* the virtio status byte: ours alone */
	u32 generation;			/* which start of the driver this is (0: none yet) */
	bool started;			/* our line says READY */
	bool served;			/* the device has said it serves our generation */
	bool stopped;			/* our line says STOPPED: Linux is going down */
	bool registered;

	unsigned long flags;		/* TLV_LINK_FAILED */
	char reason[160];
	struct work_struct fail_work;
	/* While the link runs: a look, now and then, at what no interrupt may bring. */
	struct delayed_work watch;

	atomic_long_t rung;		/* doorbells rung to the device */
	atomic_long_t taken;		/* LPIs taken */
	atomic_long_t empty;		/* of which found nothing new in the used ring */
};

#define TLV_LINK_FAILED		0

static inline struct tlv_link *to_tlv_link(struct virtio_device *vdev)
{
	return container_of(vdev, struct tlv_link, vdev);
}

/* link.c: the handshake and the checks on the device's state line. */
u32 tlv_read32(struct tlv_link *link, size_t offset);
void tlv_ring(struct tlv_link *link, unsigned int queue);
bool tlv_device_ok(struct tlv_link *link);
__printf(2, 3) void tlv_fail(struct tlv_link *link, const char *fmt, ...);
bool tlv_failed(struct tlv_link *link);
void tlv_fail_work(struct work_struct *work);
void tlv_watch(struct work_struct *work);
bool tlv_queue_ok(struct tlv_link *link, unsigned int queue);
int tlv_let_go(struct tlv_link *link, u32 state);
void tlv_start(struct tlv_link *link);
void tlv_stop(struct tlv_link *link);
extern unsigned int tlv_let_go_ms;

/* virtio.c: the virtio transport. */
extern const struct virtio_config_ops tlv_config_ops;

/* lpi.c: the interrupt domain stacked on the GIC's. */
int tlv_lpi_domain_create(struct tlv_link *link);
int tlv_lpi_map(struct tlv_link *link, struct tlv_queue *queue);
void tlv_lpi_unmap(struct tlv_queue *queue);
void tlv_lpi_domain_remove(struct tlv_link *link);

/* bounce.c: the DMA operations over the window's buffer pool. */
extern const struct dma_map_ops tlv_dma_ops;
int tlv_bounce_init(struct tlv_link *link);
bool tlv_bounce_destroy(struct tlv_link *link);

#endif
