//! The GIC as EL2 owns it (arm-gic): the distributor and every used CPU's redistributor are set
//! up once, each passthrough SPI is routed to a CPU of the partition that owns its device, and
//! each CPU interface is left as at reset before a partition gets it. EL2 itself takes no
//! interrupts.

use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicError, GicV3, SgiTarget, SgiTargetGroup};
use arm_gic::{IntId, Trigger, UniqueMmioPointer};
use core::fmt;
use core::ptr::NonNull;
use spin::{Mutex, Once};
use trapless_plan::{Plan, PhysAddr};

/// The GIC driver, reached only through [`GIC`].
struct SharedGic(GicV3<'static>);

// SAFETY: the driver holds pointers to the GIC's MMIO frames, which are the same on every CPU
// (EL2 maps them identically everywhere); all access goes through the `GIC` mutex.
unsafe impl Send for SharedGic {}

static GIC: Once<Mutex<SharedGic>> = Once::new();

/// Clears the Group 1 active priority registers this CPU interface implements (one per 32
/// preemption levels: `ICC_CTLR_EL1.PRIbits` says how many), in case an interrupt was left
/// acknowledged but not ended.
fn clear_active_priorities() {
    let ctlr: u64;
    // SAFETY: reading ICC_CTLR_EL1 has no side effects.
    unsafe { core::arch::asm!("mrs {}, icc_ctlr_el1", out(reg) ctlr, options(nomem, nostack)) };
    let priority_bits = ((ctlr >> 8) & 0b111) + 1;
    // SAFETY: each register written exists for this many priority bits, and clearing it only
    // forgets active priorities; nothing on this CPU is being handled.
    unsafe {
        core::arch::asm!("msr icc_ap1r0_el1, xzr", options(nostack));
        if priority_bits >= 7 {
            core::arch::asm!("msr icc_ap1r1_el1, xzr", options(nostack));
        }
        if priority_bits == 8 {
            core::arch::asm!("msr icc_ap1r2_el1, xzr", "msr icc_ap1r3_el1, xzr", options(nostack));
        }
        core::arch::asm!("isb", options(nostack));
    }
}

/// Why the GIC does not match the platform description.
#[derive(Debug)]
pub enum Error {
    /// The driver refused the hardware.
    Driver(GicError),
    /// The distributor reports another architecture version than the platform says.
    Version { found: u32, expected: u32 },
    /// A CPU's redistributor frame belongs to another CPU.
    Redistributor { cpu: usize, frame: PhysAddr, found_mpidr: u64, expected_mpidr: u64 },
    /// A CPU's LPI configuration is not the one EL2 set up.
    Lpi(super::lpi::Error),
}

impl From<super::lpi::Error> for Error {
    fn from(error: super::lpi::Error) -> Self {
        Self::Lpi(error)
    }
}

impl From<GicError> for Error {
    fn from(error: GicError) -> Self {
        Self::Driver(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Driver(error) => write!(f, "GIC driver: {error}"),
            Self::Version { found, expected } => {
                write!(f, "the GIC is version {found}, the platform says {expected}")
            }
            Self::Redistributor { cpu, frame, found_mpidr, expected_mpidr } => write!(
                f,
                "redistributor frame {frame} of CPU {cpu} serves MPIDR {found_mpidr:#x}, the platform says {expected_mpidr:#x}"
            ),
            Self::Lpi(error) => write!(f, "LPIs: {error}"),
        }
    }
}

/// Sets up the distributor, checks it and the redistributors of the CPUs partitions use
/// against the plan, and routes the passthrough SPIs. Returns the GIC's INTID width.
pub fn init(plan: &Plan<'_>) -> Result<u8, Error> {
    let platform = plan.platform();
    // SAFETY: the plan's GICD and GICR addresses are the platform's, checked against the
    // firmware's device tree, and EL2 maps them as Device memory. This is the distributor's
    // only driver. Partitions drive their own CPUs' SGI frames (RD frames are read-only to
    // them), but only once EL2 has finished with that CPU's redistributor in `init_cpu`.
    let mut gic = unsafe {
        let gicd = UniqueMmioPointer::new(NonNull::new(platform.gicd.base.0 as *mut Gicd).unwrap());
        let gicr = NonNull::new(platform.gicr.base.0 as *mut GicrSgi).unwrap();
        GicV3::new(gicd, gicr, plan.cpus().len())?
    };
    let version = u32::from(gic.distributor().pidr2().arch_rev());
    if version != platform.gic_version {
        return Err(Error::Version { found: version, expected: platform.gic_version });
    }
    // Only CPUs that partitions use are sure to exist (a QEMU run starts no more).
    for (cpu, record) in plan.cpus().iter().enumerate().filter(|(_, record)| record.owner().is_some()) {
        let found_mpidr = gic.gicr_typer(cpu)?.core_mpidr();
        let expected_mpidr = record.mpidr;
        if found_mpidr != expected_mpidr {
            let frame = platform.redistributor(cpu);
            return Err(Error::Redistributor { cpu, frame, found_mpidr, expected_mpidr });
        }
    }
    gic.distributor().configure_default_settings();
    for route in plan.spi_routes() {
        let intid = IntId::spi(route.intid - 32);
        let trigger = if route.edge != 0 { Trigger::Edge } else { Trigger::Level };
        let mpidr = plan.cpus()[route.cpu as usize].mpidr;
        gic.set_trigger(intid, None, trigger)?;
        gic.distributor().set_routing(intid, Some(mpidr))?;
        gic.enable_interrupt(intid, None, true)?;
    }
    let id_bits = gic.typer().id_bits() as u8;
    GIC.call_once(|| Mutex::new(SharedGic(gic)));
    Ok(id_bits)
}

/// Prepares this CPU's GIC state for a partition: system registers on for EL2 and EL1, the
/// redistributor awake with every SGI and PPI disabled (the partition enables what it uses) and
/// its LPIs as EL2 set them up, and the CPU interface as at reset: group 1 off, priority mask
/// closed, no active priority left over.
///
/// Nothing pending is acknowledged here: EL2 takes no interrupts and routes none to itself, so
/// whatever is pending is the partition's own (its SPIs, its doorbells) and must reach it.
pub fn init_cpu(cpu: usize) -> Result<(), Error> {
    GicCpuInterface::enable_system_register_el2(true);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    {
        let mut gic = GIC.get().expect("gic::init ran on the boot CPU").lock();
        let mut redistributor = gic.0.redistributor(cpu)?;
        match redistributor.mark_core_awake() {
            Ok(()) | Err(GicError::AlreadyAwake) => {}
            Err(error) => return Err(error.into()),
        }
        redistributor.configure_default_settings();
    }
    super::lpi::ensure_enabled(cpu)?;
    GicCpuInterface::enable_group1(false);
    GicCpuInterface::set_priority_mask(0);
    clear_active_priorities();
    Ok(())
}

/// Wakes platform CPU `cpu`'s redistributor (`GICR_WAKER`), so that it forwards interrupts to
/// its CPU interface: for the doorbell probe, before `init_cpu` runs on that CPU.
pub fn wake(cpu: usize) -> Result<(), Error> {
    let mut gic = GIC.get().expect("gic::init ran on the boot CPU").lock();
    match gic.0.redistributor(cpu)?.mark_core_awake() {
        Ok(()) | Err(GicError::AlreadyAwake) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// The SGI EL2 sends to wake a CPU of a stopped partition out of `WFI`, so that it faults on
/// its revoked stage 2 and parks.
const KICK: IntId = IntId::sgi(15);

/// Wakes platform CPU `cpu` (MPIDR `mpidr`), a CPU of a stopped partition that may sit in
/// `WFI`: enables [`KICK`] at the highest priority on its redistributor and sends it. The
/// partition's own CPU-interface settings (its priority mask, its group enable) still decide
/// whether the CPU wakes; `init_cpu` undoes all of this before the CPU runs a partition again.
pub fn kick(cpu: usize, mpidr: u64) {
    {
        let mut gic = GIC.get().expect("gic::init ran on the boot CPU").lock();
        let Ok(mut redistributor) = gic.0.redistributor(cpu) else { return };
        let _ = redistributor.set_interrupt_priority(KICK, 0);
        let _ = redistributor.enable_interrupt(KICK, true);
    }
    let aff0 = mpidr & 0xff;
    if aff0 < 16 {
        let target = SgiTarget::List {
            affinity3: (mpidr >> 32) as u8,
            affinity2: (mpidr >> 16) as u8,
            affinity1: (mpidr >> 8) as u8,
            target_list: 1 << aff0,
        };
        let _ = GicCpuInterface::send_sgi(KICK, target, SgiTargetGroup::CurrentGroup1);
    }
}

/// Makes SPI `intid` pending (an emulated link's interrupt), through `GICD_ISPENDR<n>`: a write
/// of one bit, which sets it and touches no other, so it needs no lock.
pub fn raise_spi(intid: u32) {
    const GICD_ISPENDR: u64 = 0x200;
    let register = crate::state::kernel().plan.platform().gicd.base.0 + GICD_ISPENDR + 4 * u64::from(intid / 32);
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ST);
    // SAFETY: the distributor is EL2's, mapped as Device memory; `intid` is an SPI the plan
    // routes to the driver (`Plan::parse` checked it is one).
    unsafe { (register as *mut u32).write_volatile(1 << (intid % 32)) };
}

/// A GIC register frame (or page) that EL2 reaches at its physical address, as the register
/// models in `trapless_kernel_core` drive it. Accesses outside the frame, or of a width other
/// than 1, 4 or 8 bytes, read as 0 and write nothing.
pub struct FrameBus {
    base: u64,
    size: usize,
}

impl FrameBus {
    /// The frame of `size` bytes at `base`.
    ///
    /// # Safety
    ///
    /// `[base, base + size)` must be GIC registers that EL2 maps as Device memory, and every
    /// 1-, 4- or 8-byte register in it must be one that EL2 may read and write on a
    /// partition's behalf as the model that uses this decides.
    pub unsafe fn new(base: u64, size: usize) -> Self {
        Self { base, size }
    }

    fn address(&self, offset: usize, size: usize) -> Option<u64> {
        (matches!(size, 1 | 4 | 8) && offset.is_multiple_of(size) && offset + size <= self.size).then(|| self.base + offset as u64)
    }
}

impl trapless_kernel_core::gic_distributor::Bus for FrameBus {
    fn read(&mut self, offset: usize, size: usize) -> u64 {
        let Some(address) = self.address(offset, size) else { return 0 };
        // SAFETY: an aligned register inside the frame the creator vouched for.
        unsafe {
            match size {
                1 => u64::from((address as *const u8).read_volatile()),
                4 => u64::from((address as *const u32).read_volatile()),
                _ => (address as *const u64).read_volatile(),
            }
        }
    }

    fn write(&mut self, offset: usize, size: usize, value: u64) {
        let Some(address) = self.address(offset, size) else { return };
        // SAFETY: as for `read`; the model decided this write concerns the partition alone.
        unsafe {
            match size {
                1 => (address as *mut u8).write_volatile(value as u8),
                4 => (address as *mut u32).write_volatile(value as u32),
                _ => (address as *mut u64).write_volatile(value),
            }
        }
        // The partition resumes with the write done.
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
    }
}

