// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * trapless-virtio: Linux's virtio drivers over trapless's static virtio links.
 *
 * A platform driver for the "trapless,virtio-static" nodes of the driver side: it maps the
 * link's window (its "memory-region") and the doorbell page (the "trapless,doorbells" node),
 * checks the window's header and configuration space against the device tree, gives each
 * queue's LPI a Linux interrupt, routes the device's DMA through the window's buffer pool, and
 * registers a virtio device that Linux's own drivers (virtio_net, virtio_blk, virtio_console)
 * drive. See docs/linux.md and docs/static-virtio.md.
 *
 * Removing the module resets every link (the device lets go and waits for a new start, which
 * loading it again makes), or, with stop_on_remove set, stops it; powering off stops them all
 * (a device partition may finish once its drivers have stopped).
 */

#include <linux/dma-map-ops.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/of.h>
#include <linux/of_address.h>
#include <linux/platform_device.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "trapless_virtio.h"

static bool tlv_stop_on_remove;
module_param_named(stop_on_remove, tlv_stop_on_remove, bool, 0644);
MODULE_PARM_DESC(stop_on_remove, "removing a link stops it (STOPPED: done) instead of resetting it");

/* The virtio device IDs a link may have, with their queues and configuration size. */
static const struct {
	u32 device_id;
	const char *kind;
	u16 queues;
	size_t config_size;
} tlv_kinds[] = {
	{ 1, "net", 2, 12 },
	{ 2, "block", 1, 24 },
	{ 3, "console", 2, 12 },
};

/* Lays the queues out as the binding does; returns the pool's start, 0 if it does not fit. */
static size_t tlv_layout(struct tlv_link *link)
{
	size_t next = TLV_QUEUES, entries = link->queue_size;
	unsigned int i;

	for (i = 0; i < link->queue_count; i++) {
		struct tlv_queue_layout *layout = &link->queues[i].layout;

		layout->desc = next;
		layout->avail = layout->desc + 16 * entries;
		layout->used = ALIGN(layout->avail + 6 + 2 * entries, TLV_PAGE);
		layout->end = ALIGN(layout->used + 6 + 8 * entries, TLV_PAGE);
		next = layout->end;
	}
	return next + TLV_MIN_POOL <= link->window_size ? next : 0;
}

static u64 tlv_read64(struct tlv_link *link, size_t offset)
{
	return le64_to_cpu(READ_ONCE(*(__le64 *)(link->window + offset)));
}

static u16 tlv_read16(struct tlv_link *link, size_t offset)
{
	return le16_to_cpu(READ_ONCE(*(__le16 *)(link->window + offset)));
}

/* The window says what the device tree says: header, configuration space, generation. */
static int tlv_check_window(struct tlv_link *link)
{
	struct device *dev = &link->pdev->dev;
	u8 config[TLV_MAX_CONFIG];
	u32 version;

	if (tlv_read64(link, TLV_HEADER + TLV_H_MAGIC) != TLV_MAGIC)
		return dev_err_probe(dev, -EINVAL,
				     "link %s: the window holds no static virtio header\n",
				     link->name);
	version = tlv_read32(link, TLV_HEADER + TLV_H_VERSION);
	if (version != TLV_LAYOUT_VERSION)
		return dev_err_probe(dev, -EINVAL,
				     "link %s: the window has layout version %u, not %u\n",
				     link->name, version, TLV_LAYOUT_VERSION);
	if (tlv_read32(link, TLV_HEADER + TLV_H_DEVICE_ID) != link->device_id ||
	    tlv_read64(link, TLV_HEADER + TLV_H_FEATURES) != link->features ||
	    tlv_read16(link, TLV_HEADER + TLV_H_QUEUE_COUNT) != link->queue_count ||
	    tlv_read16(link, TLV_HEADER + TLV_H_QUEUE_SIZE) != link->queue_size ||
	    tlv_read16(link, TLV_HEADER + TLV_H_CONFIG_SIZE) != link->config_size ||
	    tlv_read32(link, TLV_HEADER + TLV_H_WINDOW_SIZE) != link->window_size)
		return dev_err_probe(dev, -EINVAL,
				     "link %s: the window's header is not the device tree's\n",
				     link->name);
	memcpy(config, link->window + TLV_CONFIG, link->config_size);
	if (memcmp(config, link->config, link->config_size) ||
	    tlv_read32(link, TLV_CONFIG_GENERATION) != 0)
		return dev_err_probe(dev, -EINVAL,
				     "link %s: the window's configuration space is not the device tree's\n",
				     link->name);
	if (tlv_read32(link, TLV_DEVICE_STATE + TLV_STATE) == TLV_FAILED &&
	    tlv_read32(link, TLV_DEVICE_STATE + TLV_ERROR) == TLV_ERROR_HEADER)
		return dev_err_probe(dev, -EINVAL,
				     "link %s: the device found the header is not its device tree's\n",
				     link->name);
	return 0;
}

/* The CPU whose MPIDR affinity is @affinity (Aff3.Aff2.Aff1.Aff0, a byte each). */
static int tlv_cpu_of(u32 affinity)
{
	struct device_node *cpus, *cpu;
	int found = -ENODEV;

	cpus = of_find_node_by_path("/cpus");
	if (!cpus)
		return -ENODEV;
	for_each_child_of_node(cpus, cpu) {
		int cells = of_n_addr_cells(cpu), len;
		const __be32 *reg = of_get_property(cpu, "reg", &len);
		u64 mpidr;

		if (!of_node_name_eq(cpu, "cpu") || !reg || len < cells * 4)
			continue;
		mpidr = of_read_number(reg, cells);
		if ((u32)(((mpidr >> 32 & 0xff) << 24) | (mpidr & 0xffffff)) == affinity) {
			found = of_cpu_node_to_id(cpu);
			of_node_put(cpu);
			break;
		}
	}
	of_node_put(cpus);
	return found;
}

/* The link's description, from its node. */
static int tlv_parse(struct tlv_link *link)
{
	struct device *dev = &link->pdev->dev;
	struct device_node *np = dev->of_node;
	const char *role;
	const void *config;
	u32 value, events[TLV_MAX_QUEUES], lpis[2 * TLV_MAX_QUEUES];
	unsigned int i;
	int len, count, kind;

	if (of_property_read_string(np, "trapless,link", &link->name))
		return dev_err_probe(dev, -EINVAL, "no trapless,link\n");
	if (of_property_read_string(np, "trapless,role", &role) || strcmp(role, "driver"))
		return dev_err_probe(dev, -ENODEV, "link %s: this partition is not its driver\n",
				     link->name);
	if (of_property_read_u32(np, "trapless,device-id", &link->device_id) ||
	    of_property_read_u64(np, "trapless,features", &link->features) ||
	    of_property_read_u32(np, "trapless,queue-size", &value))
		return dev_err_probe(dev, -EINVAL, "link %s: incomplete node\n", link->name);
	for (kind = 0; kind < ARRAY_SIZE(tlv_kinds); kind++)
		if (tlv_kinds[kind].device_id == link->device_id)
			break;
	if (kind == ARRAY_SIZE(tlv_kinds))
		return dev_err_probe(dev, -EINVAL, "link %s: unknown device ID %u\n", link->name,
				     link->device_id);
	if (!value || value > TLV_MAX_QUEUE_SIZE || !is_power_of_2(value))
		return dev_err_probe(dev, -EINVAL, "link %s: queue size %u\n", link->name, value);
	link->queue_size = value;
	link->kind = tlv_kinds[kind].kind;
	link->queue_count = tlv_kinds[kind].queues;
	link->config_size = tlv_kinds[kind].config_size;
	if (of_property_read_u32(np, "trapless,queues", &value) || value != link->queue_count)
		return dev_err_probe(dev, -EINVAL, "link %s: a %s device has %u queues\n",
				     link->name, link->kind, link->queue_count);
	config = of_get_property(np, "trapless,config", &len);
	if (!config || len != link->config_size)
		return dev_err_probe(dev, -EINVAL,
				     "link %s: its configuration space is not %zu bytes\n",
				     link->name, link->config_size);
	memcpy(link->config, config, len);
	if (!(link->features & BIT_ULL(VIRTIO_F_ACCESS_PLATFORM)))
		return dev_err_probe(dev, -EINVAL,
				     "link %s: it does not fix ACCESS_PLATFORM, so the drivers would hand the device addresses of Linux's own memory\n",
				     link->name);

	count = of_property_read_variable_u32_array(np, "trapless,notify-lpis", lpis,
						    2 * link->queue_count, 2 * link->queue_count);
	if (count < 0)
		return dev_err_probe(dev, -EINVAL,
				     "link %s: no LPI per queue (a driver side that polls is not supported)\n",
				     link->name);
	count = of_property_read_variable_u32_array(np, "trapless,notify-events", events,
						    link->queue_count, link->queue_count);
	if (count < 0 && of_find_property(np, "trapless,notify-events", NULL))
		return dev_err_probe(dev, -EINVAL, "link %s: not one EventID per queue\n",
				     link->name);
	for (i = 0; i < link->queue_count; i++) {
		struct tlv_queue *queue = &link->queues[i];

		queue->link = link;
		queue->index = i;
		queue->has_event = count > 0;
		queue->event = count > 0 ? events[i] : 0;
		queue->lpi = lpis[2 * i];
		queue->cpu = tlv_cpu_of(lpis[2 * i + 1]);
		if (queue->lpi < 8192 || queue->cpu < 0 || !cpu_online(queue->cpu))
			return dev_err_probe(dev, -EINVAL,
					     "link %s: queue %u: LPI %u for CPU %#x, not one of Linux's\n",
					     link->name, i, queue->lpi, lpis[2 * i + 1]);
	}
	return 0;
}

/* The window, and the doorbell page if the device is rung. */
static int tlv_map(struct tlv_link *link)
{
	struct device *dev = &link->pdev->dev;
	struct device_node *node;
	struct resource res;
	u32 translater;
	int err;

	node = of_parse_phandle(dev->of_node, "memory-region", 0);
	if (!node)
		return dev_err_probe(dev, -EINVAL, "link %s: no memory-region\n", link->name);
	err = of_address_to_resource(node, 0, &res);
	of_node_put(node);
	if (err)
		return dev_err_probe(dev, err, "link %s: its window has no address\n", link->name);
	link->window_phys = res.start;
	link->window_size = resource_size(&res);
	link->window = devm_memremap(dev, res.start, link->window_size, MEMREMAP_WB);
	if (IS_ERR(link->window))
		return dev_err_probe(dev, PTR_ERR(link->window), "link %s: cannot map its window\n",
				     link->name);
	link->pool_start = tlv_layout(link);
	if (!link->pool_start)
		return dev_err_probe(dev, -EINVAL, "link %s: the window does not hold its queues\n",
				     link->name);

	if (!link->queues[0].has_event)
		return 0;
	node = of_find_compatible_node(NULL, NULL, "trapless,doorbells");
	if (!node)
		return dev_err_probe(dev, -EINVAL, "link %s: no trapless,doorbells node\n",
				     link->name);
	err = of_address_to_resource(node, 0, &res);
	if (!err)
		err = of_property_read_u32(node, "trapless,translater", &translater);
	of_node_put(node);
	if (err || translater > resource_size(&res) - 4)
		return dev_err_probe(dev, -EINVAL, "link %s: no doorbell page\n", link->name);
	/* Shared by every link: not requested, only mapped. */
	link->doorbell = devm_ioremap(dev, res.start, resource_size(&res));
	if (!link->doorbell)
		return dev_err_probe(dev, -ENOMEM, "link %s: cannot map the doorbell page\n",
				     link->name);
	link->translater = link->doorbell + translater;
	return 0;
}

static void tlv_release(struct device *dev)
{
	struct virtio_device *vdev = container_of(dev, struct virtio_device, dev);

	kfree(to_tlv_link(vdev));
}

static void tlv_unmap_lpis(struct tlv_link *link)
{
	unsigned int i;

	for (i = 0; i < link->queue_count; i++)
		tlv_lpi_unmap(&link->queues[i]);
	tlv_lpi_domain_remove(link);
}

static int tlv_probe(struct platform_device *pdev)
{
	struct device *dev = &pdev->dev;
	struct tlv_link *link;
	char lpis[32];
	unsigned int i;
	int err;

	link = kzalloc(sizeof(*link), GFP_KERNEL);
	if (!link)
		return -ENOMEM;
	link->pdev = pdev;
	INIT_WORK(&link->fail_work, tlv_fail_work);
	INIT_DELAYED_WORK(&link->watch, tlv_watch);
	platform_set_drvdata(pdev, link);
	err = tlv_parse(link);
	if (!err)
		err = tlv_map(link);
	if (!err)
		err = tlv_check_window(link);
	if (err)
		goto free_link;

	err = tlv_lpi_domain_create(link);
	if (err)
		goto free_link;
	for (i = 0; i < link->queue_count; i++) {
		err = tlv_lpi_map(link, &link->queues[i]);
		if (err) {
			dev_err_probe(dev, err, "link %s: cannot map LPI %u\n", link->name,
				      link->queues[i].lpi);
			goto unmap_lpis;
		}
	}
	err = tlv_bounce_init(link);
	if (err)
		goto unmap_lpis;
	set_dma_ops(dev, &tlv_dma_ops);

	/* Carry on from the generation our line holds, after the device let go of it. */
	link->generation = tlv_read32(link, TLV_DRIVER_STATE + TLV_GENERATION);
	err = tlv_let_go(link, TLV_RESET);
	if (err)
		goto free_bounce;

	/* Every kind has one or two queues. */
	if (link->queue_count > 1)
		snprintf(lpis, sizeof(lpis), "LPIs %u and %u", link->queues[0].lpi,
			 link->queues[1].lpi);
	else
		snprintf(lpis, sizeof(lpis), "LPI %u", link->queues[0].lpi);
	dev_info(dev, "link %s: %s, %u queue(s) of %u, window %pa+%#zx, pool from +%#zx, %s, generation %u\n",
		 link->name, link->kind, link->queue_count, link->queue_size, &link->window_phys,
		 link->window_size, link->pool_start, lpis, link->generation);

	link->vdev.dev.parent = dev;
	link->vdev.dev.release = tlv_release;
	link->vdev.id.device = link->device_id;
	link->vdev.id.vendor = 0x6c707274;	/* "trpl" */
	link->vdev.config = &tlv_config_ops;
	link->registered = true;
	err = register_virtio_device(&link->vdev);
	if (err) {
		link->registered = false;
		dev_err(dev, "link %s: cannot register its virtio device: %d\n", link->name, err);
		cancel_delayed_work_sync(&link->watch);
		cancel_work_sync(&link->fail_work);
		set_dma_ops(dev, NULL);
		tlv_bounce_destroy(link);
		tlv_unmap_lpis(link);
		/* The virtio core holds a reference: the release frees the link. */
		put_device(&link->vdev.dev);
		return err;
	}
	return 0;

free_bounce:
	set_dma_ops(dev, NULL);
	tlv_bounce_destroy(link);
unmap_lpis:
	tlv_unmap_lpis(link);
free_link:
	cancel_delayed_work_sync(&link->watch);
	cancel_work_sync(&link->fail_work);
	kfree(link);
	return err;
}

static int tlv_remove(struct platform_device *pdev)
{
	struct tlv_link *link = platform_get_drvdata(pdev);

	/* The link lives until its virtio device's last reference goes: keep one till done. */
	get_device(&link->vdev.dev);
	unregister_virtio_device(&link->vdev);
	link->registered = false;
	if (tlv_stop_on_remove)
		tlv_stop(link);
	cancel_delayed_work_sync(&link->watch);
	cancel_work_sync(&link->fail_work);
	set_dma_ops(&pdev->dev, NULL);
	if (!tlv_bounce_destroy(link))
		dev_err(&pdev->dev, "link %s: %ld bytes still mapped: the pool stays\n", link->name,
			atomic_long_read(&link->bounce.in_use));
	tlv_unmap_lpis(link);
	/* Quiet: a device partition may report on its console the moment it sees the stop. */
	dev_dbg(&pdev->dev, "link %s: removed; rang the device %ld times, took %ld LPIs (%ld found nothing)\n",
		link->name, atomic_long_read(&link->rung), atomic_long_read(&link->taken),
		atomic_long_read(&link->empty));
	put_device(&link->vdev.dev);
	return 0;
}

/* Linux is powering off or rebooting: the link is done, and the device may finish. */
static void tlv_shutdown(struct platform_device *pdev)
{
	struct tlv_link *link = platform_get_drvdata(pdev);

	dev_dbg(&pdev->dev, "link %s: stopping; rang the device %ld times, took %ld LPIs (%ld found nothing)\n",
		link->name, atomic_long_read(&link->rung), atomic_long_read(&link->taken),
		atomic_long_read(&link->empty));
	tlv_stop(link);
}

static ssize_t doorbells_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct tlv_link *link = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%ld\n", atomic_long_read(&link->rung));
}
static DEVICE_ATTR_RO(doorbells);

static ssize_t interrupts_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct tlv_link *link = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%ld %ld\n", atomic_long_read(&link->taken),
			  atomic_long_read(&link->empty));
}
static DEVICE_ATTR_RO(interrupts);

static ssize_t state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct tlv_link *link = dev_get_drvdata(dev);

	if (tlv_failed(link))
		return sysfs_emit(buf, "failed: %s\n", link->reason);
	return sysfs_emit(buf, "%s generation %u, %ld bytes mapped, %ld mappings refused\n",
			  READ_ONCE(link->started) ? "running" : "reset", link->generation,
			  atomic_long_read(&link->bounce.in_use),
			  atomic_long_read(&link->bounce.failures));
}
static DEVICE_ATTR_RO(state);

static struct attribute *tlv_attrs[] = {
	&dev_attr_doorbells.attr,
	&dev_attr_interrupts.attr,
	&dev_attr_state.attr,
	NULL,
};
ATTRIBUTE_GROUPS(tlv);

static const struct of_device_id tlv_of_match[] = {
	{ .compatible = "trapless,virtio-static" },
	{ }
};
MODULE_DEVICE_TABLE(of, tlv_of_match);

static struct platform_driver tlv_driver = {
	.probe		= tlv_probe,
	.remove		= tlv_remove,
	.shutdown	= tlv_shutdown,
	.driver		= {
		.name		= "trapless-virtio",
		.of_match_table	= tlv_of_match,
		.dev_groups	= tlv_groups,
	},
};
module_platform_driver(tlv_driver);

MODULE_DESCRIPTION("virtio over trapless's static virtio links: shared windows and ITS doorbells");
MODULE_LICENSE("Dual MIT/GPL");
