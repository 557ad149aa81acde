// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The LPIs the device's doorbells raise here, as Linux interrupts: an interrupt domain stacked
 * on the GIC's, as the ITS driver stacks its own, that maps each queue's LPI by number.
 *
 * The hypervisor owns everything about these LPIs but their delivery: it enabled them at boot
 * in the LPI property table, mapped their EventIDs in the ITS and chose the CPU that takes each.
 * Linux has no ITS in its device tree, so it neither allocates LPI numbers (which would collide
 * with other partitions') nor touches those tables. Here, then, an interrupt is acknowledged and
 * ended at the CPU interface as any GIC interrupt is (the GIC's own EOI, which does not trap);
 * masking is bookkeeping only (an LPI that comes while masked is taken, ended and replayed by
 * Linux when unmasked); the target CPU is fixed.
 */

#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/irqchip/arm-gic-v3.h>
#include <linux/irqdomain.h>
#include <linux/of.h>
#include <linux/of_irq.h>

#include "trapless_virtio.h"

static void tlv_lpi_mask(struct irq_data *data)
{
}

static void tlv_lpi_unmask(struct irq_data *data)
{
}

static int tlv_lpi_set_type(struct irq_data *data, unsigned int type)
{
	return type == IRQ_TYPE_EDGE_RISING ? 0 : -EINVAL;
}

/* The hypervisor routes the LPI to one CPU: any other choice is refused. */
static int tlv_lpi_set_affinity(struct irq_data *data, const struct cpumask *mask, bool force)
{
	struct tlv_queue *queue = irq_data_get_irq_chip_data(data);

	if (!cpumask_test_cpu(queue->cpu, mask))
		return -EINVAL;
	irq_data_update_effective_affinity(data, cpumask_of(queue->cpu));
	return IRQ_SET_MASK_OK_DONE;
}

static struct irq_chip tlv_lpi_chip = {
	.name			= "trapless-lpi",
	.irq_mask		= tlv_lpi_mask,
	.irq_unmask		= tlv_lpi_unmask,
	.irq_eoi		= irq_chip_eoi_parent,
	.irq_set_type		= tlv_lpi_set_type,
	.irq_set_affinity	= tlv_lpi_set_affinity,
	.flags			= IRQCHIP_SKIP_SET_WAKE,
};

static int tlv_lpi_alloc(struct irq_domain *domain, unsigned int virq, unsigned int count,
			 void *arg)
{
	struct tlv_queue *queue = arg;
	struct irq_fwspec parent = {
		.fwnode		= domain->parent->fwnode,
		.param_count	= 3,
		.param		= { GIC_IRQ_TYPE_LPI, queue->lpi, IRQ_TYPE_EDGE_RISING },
	};
	int err;

	if (count != 1)
		return -EINVAL;
	err = irq_domain_alloc_irqs_parent(domain, virq, 1, &parent);
	if (err)
		return err;
	err = irq_domain_set_hwirq_and_chip(domain, virq, queue->lpi, &tlv_lpi_chip, queue);
	if (err)
		irq_domain_free_irqs_parent(domain, virq, 1);
	return err;
}

static const struct irq_domain_ops tlv_lpi_domain_ops = {
	.alloc	= tlv_lpi_alloc,
	.free	= irq_domain_free_irqs_common,
};

/* The link's domain, on the GIC's (the interrupt parent of its node). */
int tlv_lpi_domain_create(struct tlv_link *link)
{
	struct device *dev = &link->pdev->dev;
	struct device_node *gic;
	struct irq_domain *parent;

	gic = of_irq_find_parent(dev->of_node);
	if (!gic)
		return dev_err_probe(dev, -ENODEV, "link %s: no interrupt controller\n",
				     link->name);
	parent = irq_find_host(gic);
	if (!parent || !of_device_is_compatible(gic, "arm,gic-v3")) {
		of_node_put(gic);
		return dev_err_probe(dev, -EPROBE_DEFER, "link %s: no GICv3 interrupt domain\n",
				     link->name);
	}
	of_node_put(gic);
	link->domain = irq_domain_create_hierarchy(parent, 0, 0, of_fwnode_handle(dev->of_node),
						   &tlv_lpi_domain_ops, link);
	if (!link->domain)
		return dev_err_probe(dev, -ENOMEM, "link %s: no interrupt domain\n", link->name);
	return 0;
}

/* Gives @queue's LPI a Linux interrupt, taken on its fixed CPU and never balanced. */
int tlv_lpi_map(struct tlv_link *link, struct tlv_queue *queue)
{
	int virq;

	virq = __irq_domain_alloc_irqs(link->domain, -1, 1, NUMA_NO_NODE, queue, false, NULL);
	if (virq < 0)
		return virq;
	irq_set_status_flags(virq, IRQ_NO_BALANCING);
	irq_data_update_effective_affinity(irq_get_irq_data(virq), cpumask_of(queue->cpu));
	queue->irq = virq;
	return 0;
}

void tlv_lpi_unmap(struct tlv_queue *queue)
{
	if (queue->irq)
		irq_dispose_mapping(queue->irq);
	queue->irq = 0;
}

void tlv_lpi_domain_remove(struct tlv_link *link)
{
	if (link->domain)
		irq_domain_remove(link->domain);
	link->domain = NULL;
}
