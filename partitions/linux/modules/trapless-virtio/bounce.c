// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * DMA for a static link: the device partition sees nothing of Linux but the window, so every
 * buffer a driver maps is bounced through the window's buffer pool, and the DMA address the
 * device gets is the bounce buffer's physical address in the window. (Debian's kernels lack
 * CONFIG_DMA_RESTRICTED_POOL, which would do this from a device-tree node.) The link offers
 * VIRTIO_F_ACCESS_PLATFORM, so Linux's virtio core maps every buffer through these operations.
 *
 * Mapping for the device copies the buffer in (to the device, both ways); unmapping, or a sync
 * for the CPU, copies it back (from the device, both ways). Sizes are the caller's, never the
 * device's: a device that reports more bytes than a buffer holds cannot make a copy overrun it.
 * The pool (a gen_pool, safe in any context) hands out 64-byte slots; each slot of a mapping
 * remembers the caller's memory it stands for, so a sync of part of a mapping finds its place.
 */

#include <linux/dma-map-ops.h>
#include <linux/genalloc.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include "trapless_virtio.h"

#define TLV_SLOT	BIT(TLV_SLOT_ORDER)
/* The largest single mapping: a block request's segment, a network frame, many times over. */
#define TLV_MAX_MAPPING	(64 * 1024)

static struct tlv_bounce *tlv_bounce_of(struct device *dev)
{
	struct tlv_link *link = dev_get_drvdata(dev);

	return &link->bounce;
}

/* The pool offset of @dma, if [@dma, @dma + @size) lies in the pool. */
static bool tlv_offset(struct tlv_bounce *bounce, dma_addr_t dma, size_t size, size_t *offset)
{
	if (dma < bounce->phys || dma - bounce->phys >= bounce->size ||
	    size > bounce->size - (dma - bounce->phys))
		return false;
	*offset = dma - bounce->phys;
	return true;
}

/*
 * Copies between the pool at [@offset, @offset + @size) and the caller's memory it stands for.
 * The range lies in one mapping (the callers pass back their own DMA addresses), whose caller
 * memory is contiguous: the first slot says where it starts.
 */
static void tlv_copy(struct tlv_bounce *bounce, size_t offset, size_t size, bool to_device)
{
	void *origin = READ_ONCE(bounce->origin[offset >> TLV_SLOT_ORDER]);
	void *pool = bounce->base + offset;

	if (WARN_ON_ONCE(!origin))
		return;
	origin += offset & (TLV_SLOT - 1);
	if (to_device)
		memcpy(pool, origin, size);
	else
		memcpy(origin, pool, size);
}

static dma_addr_t tlv_map(struct tlv_bounce *bounce, void *origin, size_t size,
			  enum dma_data_direction dir, unsigned long attrs)
{
	unsigned long va;
	size_t offset, slot, slots, i;

	if (!size || size > TLV_MAX_MAPPING)
		return DMA_MAPPING_ERROR;
	va = gen_pool_alloc(bounce->pool, size);
	if (!va) {
		atomic_long_inc(&bounce->failures);
		return DMA_MAPPING_ERROR;
	}
	atomic_long_add(size, &bounce->in_use);
	offset = va - (unsigned long)bounce->base;
	slot = offset >> TLV_SLOT_ORDER;
	slots = DIV_ROUND_UP(size, TLV_SLOT);
	for (i = 0; i < slots; i++)
		WRITE_ONCE(bounce->origin[slot + i], origin + i * TLV_SLOT);
	if ((dir == DMA_TO_DEVICE || dir == DMA_BIDIRECTIONAL) &&
	    !(attrs & DMA_ATTR_SKIP_CPU_SYNC))
		memcpy((void *)va, origin, size);
	return bounce->phys + offset;
}

static void tlv_unmap(struct tlv_bounce *bounce, dma_addr_t dma, size_t size,
		      enum dma_data_direction dir, unsigned long attrs)
{
	size_t offset, slot, slots, i;

	if (WARN_ON_ONCE(!tlv_offset(bounce, dma, size, &offset)))
		return;
	if ((dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL) &&
	    !(attrs & DMA_ATTR_SKIP_CPU_SYNC))
		tlv_copy(bounce, offset, size, false);
	slot = offset >> TLV_SLOT_ORDER;
	slots = DIV_ROUND_UP(size, TLV_SLOT);
	for (i = 0; i < slots; i++)
		WRITE_ONCE(bounce->origin[slot + i], NULL);
	gen_pool_free(bounce->pool, (unsigned long)bounce->base + offset, size);
	atomic_long_sub(size, &bounce->in_use);
}

static dma_addr_t tlv_map_page(struct device *dev, struct page *page, unsigned long offset,
			       size_t size, enum dma_data_direction dir, unsigned long attrs)
{
	return tlv_map(tlv_bounce_of(dev), page_address(page) + offset, size, dir, attrs);
}

static void tlv_unmap_page(struct device *dev, dma_addr_t dma, size_t size,
			   enum dma_data_direction dir, unsigned long attrs)
{
	tlv_unmap(tlv_bounce_of(dev), dma, size, dir, attrs);
}

static void tlv_unmap_sg(struct device *dev, struct scatterlist *sgl, int count,
			 enum dma_data_direction dir, unsigned long attrs)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, count, i)
		tlv_unmap_page(dev, sg_dma_address(sg), sg_dma_len(sg), dir, attrs);
}

static int tlv_map_sg(struct device *dev, struct scatterlist *sgl, int count,
		      enum dma_data_direction dir, unsigned long attrs)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, count, i) {
		sg_dma_address(sg) = tlv_map_page(dev, sg_page(sg), sg->offset, sg->length, dir,
						  attrs);
		if (sg_dma_address(sg) == DMA_MAPPING_ERROR) {
			tlv_unmap_sg(dev, sgl, i, dir, attrs | DMA_ATTR_SKIP_CPU_SYNC);
			return -ENOMEM;
		}
		sg_dma_len(sg) = sg->length;
	}
	return count;
}

static void tlv_sync_for_cpu(struct device *dev, dma_addr_t dma, size_t size,
			     enum dma_data_direction dir)
{
	struct tlv_bounce *bounce = tlv_bounce_of(dev);
	size_t offset;

	if (WARN_ON_ONCE(!tlv_offset(bounce, dma, size, &offset)))
		return;
	if (dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL)
		tlv_copy(bounce, offset, size, false);
}

static void tlv_sync_for_device(struct device *dev, dma_addr_t dma, size_t size,
				enum dma_data_direction dir)
{
	struct tlv_bounce *bounce = tlv_bounce_of(dev);
	size_t offset;

	if (WARN_ON_ONCE(!tlv_offset(bounce, dma, size, &offset)))
		return;
	if (dir == DMA_TO_DEVICE || dir == DMA_BIDIRECTIONAL)
		tlv_copy(bounce, offset, size, true);
}

static void tlv_sync_sg_for_cpu(struct device *dev, struct scatterlist *sgl, int count,
				enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, count, i)
		tlv_sync_for_cpu(dev, sg_dma_address(sg), sg_dma_len(sg), dir);
}

static void tlv_sync_sg_for_device(struct device *dev, struct scatterlist *sgl, int count,
				   enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, count, i)
		tlv_sync_for_device(dev, sg_dma_address(sg), sg_dma_len(sg), dir);
}

/* Coherent memory: straight from the pool, zeroed. */
static void *tlv_alloc(struct device *dev, size_t size, dma_addr_t *dma, gfp_t gfp,
		       unsigned long attrs)
{
	struct tlv_bounce *bounce = tlv_bounce_of(dev);
	unsigned long va;

	if (!size || size > TLV_MAX_MAPPING)
		return NULL;
	va = gen_pool_alloc(bounce->pool, size);
	if (!va)
		return NULL;
	atomic_long_add(size, &bounce->in_use);
	memset((void *)va, 0, size);
	*dma = bounce->phys + (va - (unsigned long)bounce->base);
	return (void *)va;
}

static void tlv_free(struct device *dev, size_t size, void *vaddr, dma_addr_t dma,
		     unsigned long attrs)
{
	struct tlv_bounce *bounce = tlv_bounce_of(dev);
	size_t offset;

	if (WARN_ON_ONCE(!tlv_offset(bounce, dma, size, &offset)))
		return;
	gen_pool_free(bounce->pool, (unsigned long)vaddr, size);
	atomic_long_sub(size, &bounce->in_use);
}

static int tlv_dma_supported(struct device *dev, u64 mask)
{
	return 1;
}

static size_t tlv_max_mapping_size(struct device *dev)
{
	return min_t(size_t, TLV_MAX_MAPPING, tlv_bounce_of(dev)->size / 2);
}

const struct dma_map_ops tlv_dma_ops = {
	.alloc			= tlv_alloc,
	.free			= tlv_free,
	.map_page		= tlv_map_page,
	.unmap_page		= tlv_unmap_page,
	.map_sg			= tlv_map_sg,
	.unmap_sg		= tlv_unmap_sg,
	.sync_single_for_cpu	= tlv_sync_for_cpu,
	.sync_single_for_device	= tlv_sync_for_device,
	.sync_sg_for_cpu	= tlv_sync_sg_for_cpu,
	.sync_sg_for_device	= tlv_sync_sg_for_device,
	.dma_supported		= tlv_dma_supported,
	.max_mapping_size	= tlv_max_mapping_size,
};

/* The pool over the window's buffer area (from the end of the last queue to the end). */
int tlv_bounce_init(struct tlv_link *link)
{
	struct tlv_bounce *bounce = &link->bounce;
	int err;

	bounce->base = link->window + link->pool_start;
	bounce->phys = link->window_phys + link->pool_start;
	bounce->size = link->window_size - link->pool_start;
	bounce->origin = kvcalloc(bounce->size >> TLV_SLOT_ORDER, sizeof(void *), GFP_KERNEL);
	if (!bounce->origin)
		return -ENOMEM;
	bounce->pool = gen_pool_create(TLV_SLOT_ORDER, NUMA_NO_NODE);
	if (!bounce->pool) {
		kvfree(bounce->origin);
		return -ENOMEM;
	}
	err = gen_pool_add_virt(bounce->pool, (unsigned long)bounce->base, bounce->phys,
				bounce->size, NUMA_NO_NODE);
	if (err) {
		gen_pool_destroy(bounce->pool);
		kvfree(bounce->origin);
	}
	return err;
}

/*
 * Frees the pool, unless a driver left something mapped (gen_pool_destroy() would BUG): then
 * the pool is left behind, and false returned.
 */
bool tlv_bounce_destroy(struct tlv_link *link)
{
	struct tlv_bounce *bounce = &link->bounce;

	if (!bounce->pool)
		return true;
	if (atomic_long_read(&bounce->in_use))
		return false;
	gen_pool_destroy(bounce->pool);
	kvfree(bounce->origin);
	bounce->pool = NULL;
	return true;
}
