// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * sgi-probe: asks the GIC, from EL1, for SGIs to CPUs that are not this partition's.
 *
 * A partition's kernel sends inter-processor interrupts by writing ICC_SGI1R_EL1. trapless traps
 * that write and delivers the SGI only to the partition's own CPUs. This module makes the
 * writes a hostile kernel would: one per MPIDR in targets= (each naming that CPU alone), and,
 * with broadcast=1, one to "all but self". It says what it wrote; whoever owns those CPUs must
 * see nothing. SGI 0 (the default) is Linux's reschedule IPI, harmless to its own CPUs.
 */

#include <linux/kernel.h>
#include <linux/module.h>
#include <asm/barrier.h>
#include <asm/sysreg.h>

#define SGI1R_TARGET_LIST_SHIFT	0
#define SGI1R_AFF1_SHIFT	16
#define SGI1R_INTID_SHIFT	24
#define SGI1R_AFF2_SHIFT	32
#define SGI1R_IRM		BIT_ULL(40)
#define SGI1R_AFF3_SHIFT	48

static unsigned long targets[8];
static int target_count;
module_param_array(targets, ulong, &target_count, 0444);
MODULE_PARM_DESC(targets, "MPIDRs to send the SGI to, one write each");

static bool broadcast;
module_param(broadcast, bool, 0444);
MODULE_PARM_DESC(broadcast, "also send the SGI to all but this CPU");

static unsigned int sgi;
module_param(sgi, uint, 0444);
MODULE_PARM_DESC(sgi, "the SGI (0-15)");

static u64 sgi1r_for(unsigned long mpidr)
{
	u64 aff0 = mpidr & 0xf;

	return (((u64)mpidr >> 32 & 0xff) << SGI1R_AFF3_SHIFT) |
	       (((u64)mpidr >> 16 & 0xff) << SGI1R_AFF2_SHIFT) |
	       (((u64)mpidr >> 8 & 0xff) << SGI1R_AFF1_SHIFT) |
	       ((u64)(sgi & 0xf) << SGI1R_INTID_SHIFT) |
	       (BIT_ULL(aff0) << SGI1R_TARGET_LIST_SHIFT);
}

static void send(u64 value)
{
	/* Whatever was written before must be visible to the target first, as for any IPI. */
	wmb();
	write_sysreg_s(value, SYS_ICC_SGI1R_EL1);
	isb();
}

static int __init sgi_probe_init(void)
{
	int i;

	if (sgi > 15)
		return -EINVAL;
	for (i = 0; i < target_count; i++) {
		u64 value = sgi1r_for(targets[i]);

		send(value);
		pr_info("sgi-probe: SGI %u to MPIDR %#lx: wrote ICC_SGI1R_EL1 %#llx\n",
			sgi, targets[i], value);
	}
	if (broadcast) {
		u64 value = SGI1R_IRM | ((u64)(sgi & 0xf) << SGI1R_INTID_SHIFT);

		send(value);
		pr_info("sgi-probe: SGI %u to all but self: wrote ICC_SGI1R_EL1 %#llx\n",
			sgi, value);
	}
	return 0;
}

static void __exit sgi_probe_exit(void)
{
}

module_init(sgi_probe_init);
module_exit(sgi_probe_exit);
MODULE_DESCRIPTION("Sends SGIs from EL1 to CPUs a trapless partition does not own");
MODULE_LICENSE("Dual MIT/GPL");
