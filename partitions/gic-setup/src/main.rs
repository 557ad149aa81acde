//! A bare-metal guest that sets up the GIC the standard way, with the stock `arm-gic` driver and
//! nothing trapless-specific: it reads `GICD_TYPER`, runs the driver's `setup` (distributor and
//! redistributor defaults, `GICR_WAKER`, `ICC_CTLR_EL1`), enables its timer PPI and the SPI of
//! its passthrough RTC (PL031) with their priority, trigger and routing, opens its priority
//! mask, and sends itself an SGI. Then it makes each of the three fire and counts what arrives.
//!
//! Boot arguments: `rtc=<address> spi=<INTID>` (its RTC), and optionally `wait=<doorbell>`: wait
//! (at most a minute) for that doorbell before firing, so that another partition can try to
//! disturb the interrupts set up here first, then `settle-ms` (default 0) more, so that what the
//! ringer prints after ringing is not interleaved with what this prints. Anything that arrives and was not fired here (an
//! SGI other than its own, the SPI before the alarm) is reported, and so is anything that does
//! not arrive; either ends the run with `SYSTEM_RESET`.

#![no_std]
#![no_main]

use aarch64_cpu::registers::{CNTFRQ_EL0, CNTP_CTL_EL0, CNTP_TVAL_EL0, CNTV_CTL_EL0, CNTV_TVAL_EL0, MPIDR_EL1, Readable, Writeable};
use arm_gic::gicv3::registers::{Gicd, GicrSgi};
use arm_gic::gicv3::{GicCpuInterface, GicV3, SgiTarget, SgiTargetGroup};
use arm_gic::{IntId, Trigger};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use safe_mmio::UniqueMmioPointer;
use trapless_guest::{Boot, doorbell, irq, println, psci};

trapless_guest::entry!(main);

/// The EL1 physical timer's PPI (INTID 30), and the virtual timer's (27), which bounds waits.
const TIMER: IntId = IntId::ppi(14);
const DEADLINE_TIMER: IntId = IntId::ppi(11);
/// The SGI this guest sends itself.
const OWN_SGI: u32 = 3;
const PRIORITY: u8 = 0x80;

/// PL031 registers: data (seconds), match, interrupt mask, interrupt clear.
const RTC_DR: u64 = 0x000;
const RTC_MR: u64 = 0x004;
const RTC_IMSC: u64 = 0x010;
const RTC_ICR: u64 = 0x01c;

static RTC: AtomicU64 = AtomicU64::new(0);
static TIMER_TAKEN: AtomicU32 = AtomicU32::new(0);
static SPI_TAKEN: AtomicU32 = AtomicU32::new(0);
static SGIS_TAKEN: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
static GO: AtomicBool = AtomicBool::new(false);
static DEADLINE: AtomicBool = AtomicBool::new(false);

fn fail(what: core::fmt::Arguments<'_>) -> ! {
    println!("gic-setup: {what}");
    psci::system_reset()
}

fn number(boot: &Boot, key: &str) -> u64 {
    let text = boot.arg(key).unwrap_or_else(|| fail(format_args!("give {key}=")));
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| fail(format_args!("{key}={text} is not a number")))
}

fn rtc(offset: u64) -> *mut u32 {
    (RTC.load(Ordering::Relaxed) + offset) as *mut u32
}

fn on_timer(_: u32) {
    CNTP_CTL_EL0.set(0);
    TIMER_TAKEN.fetch_add(1, Ordering::SeqCst);
}

fn on_deadline(_: u32) {
    CNTV_CTL_EL0.set(0);
    DEADLINE.store(true, Ordering::SeqCst);
}

fn on_rtc(_: u32) {
    // SAFETY: the PL031 the device tree gives this partition; masking and clearing its alarm
    // lowers the level-triggered SPI.
    unsafe {
        rtc(RTC_IMSC).write_volatile(0);
        rtc(RTC_ICR).write_volatile(1);
    }
    SPI_TAKEN.fetch_add(1, Ordering::SeqCst);
}

fn on_sgi(intid: u32) {
    SGIS_TAKEN[intid as usize % 16].fetch_add(1, Ordering::SeqCst);
}

fn on_go(_: u32) {
    GO.store(true, Ordering::SeqCst);
}

/// Sleeps until `done()` or `seconds` pass.
fn wait(seconds: u64, done: impl Fn() -> bool) -> bool {
    DEADLINE.store(false, Ordering::SeqCst);
    CNTV_TVAL_EL0.set(CNTFRQ_EL0.get() * seconds);
    CNTV_CTL_EL0.set(1);
    irq::wait_until(|| done() || DEADLINE.load(Ordering::SeqCst));
    CNTV_CTL_EL0.set(0);
    done()
}

fn main(boot: &Boot) {
    if boot.cpu_count != 1 {
        fail(format_args!("runs on one CPU, not {}", boot.cpu_count));
    }
    RTC.store(number(boot, "rtc"), Ordering::Relaxed);
    let spi = IntId::spi(number(boot, "spi") as u32 - 32);
    let gicd = NonNull::new(boot.distributor.start as *mut Gicd).unwrap_or_else(|| fail(format_args!("no distributor")));
    let gicr = boot.redistributor_regions().first().and_then(|region| NonNull::new(region.start as *mut GicrSgi));
    let gicr = gicr.unwrap_or_else(|| fail(format_args!("no redistributor")));
    // SAFETY: the GIC node of this partition's device tree: its distributor and its one CPU's
    // redistributor, Device memory in the runtime's map, driven by this driver alone.
    let mut gic = unsafe { GicV3::new(UniqueMmioPointer::new(gicd), gicr, 1) }
        .unwrap_or_else(|error| fail(format_args!("the driver refuses the GIC: {error}")));
    let typer = gic.typer();
    println!(
        "gic-setup: GICD_TYPER: {} SPIs, LPIs {}, {} ID bits",
        typer.num_spis(),
        if typer.lpis_supported() { "supported" } else { "not supported" },
        typer.id_bits()
    );
    gic.setup(0);

    let mpidr = MPIDR_EL1.get() & 0xff_00ff_ffff;
    let handlers: [(IntId, fn(u32)); 3] = [(TIMER, on_timer), (DEADLINE_TIMER, on_deadline), (spi, on_rtc)];
    for (intid, handler) in handlers.into_iter().chain((0..16).map(|sgi| (IntId::sgi(sgi), on_sgi as fn(u32)))) {
        if irq::register(intid.into(), handler).is_err() {
            fail(format_args!("no handler slot for {intid:?}"));
        }
    }
    let set_up = (|| {
        for private in [TIMER, DEADLINE_TIMER].into_iter().chain((0..16).map(IntId::sgi)) {
            gic.set_interrupt_priority(private, Some(0), PRIORITY)?;
            gic.enable_interrupt(private, Some(0), true)?;
        }
        gic.set_trigger(spi, None, Trigger::Level)?;
        gic.distributor().set_routing(spi, Some(mpidr))?;
        gic.set_interrupt_priority(spi, None, PRIORITY)?;
        gic.enable_interrupt(spi, None, true)
    })();
    if let Err(error) = set_up {
        fail(format_args!("setting up the interrupts: {error}"));
    }
    GicCpuInterface::set_priority_mask(0xff);
    arm_gic::irq_enable();
    println!("gic-setup: timer PPI {}, SPI {} and SGIs enabled, priority mask open", u32::from(TIMER), u32::from(spi));

    if let Some(name) = boot.arg("wait") {
        if let Err(error) = doorbell::on(boot, name, on_go) {
            fail(format_args!("no doorbell '{name}' rings me: {error:?}"));
        }
        if !wait(60, || GO.load(Ordering::SeqCst)) {
            fail(format_args!("doorbell '{name}' did not ring within a minute"));
        }
        let settle_ms = boot.arg("settle-ms").map_or(0, |_| number(boot, "settle-ms"));
        trapless_guest::time::delay_us(settle_ms * 1000);
        println!("gic-setup: doorbell '{name}' rang");
    }
    let foreign_spis = SPI_TAKEN.load(Ordering::SeqCst);

    // Fire all three: the timer in 1 ms, the RTC at its next second, the SGI now.
    CNTP_TVAL_EL0.set(CNTFRQ_EL0.get() / 1000);
    CNTP_CTL_EL0.set(1);
    // SAFETY: this partition's PL031: unmask its alarm and set it to the next second.
    unsafe {
        rtc(RTC_IMSC).write_volatile(1);
        let now = rtc(RTC_DR).read_volatile();
        rtc(RTC_MR).write_volatile(now.wrapping_add(1));
    }
    let target = SgiTarget::List {
        affinity3: (mpidr >> 32) as u8,
        affinity2: (mpidr >> 16) as u8,
        affinity1: (mpidr >> 8) as u8,
        target_list: 1 << (mpidr & 0xf),
    };
    if let Err(error) = GicCpuInterface::send_sgi(IntId::sgi(OWN_SGI), target, SgiTargetGroup::CurrentGroup1) {
        fail(format_args!("sending SGI {OWN_SGI}: {error}"));
    }
    let arrived = || {
        TIMER_TAKEN.load(Ordering::SeqCst) >= 1
            && SPI_TAKEN.load(Ordering::SeqCst) > foreign_spis
            && SGIS_TAKEN[OWN_SGI as usize].load(Ordering::SeqCst) >= 1
    };
    let all = wait(3, arrived);
    let other_sgis: u32 = (0..16).filter(|&sgi| sgi != OWN_SGI as usize).map(|sgi| SGIS_TAKEN[sgi].load(Ordering::SeqCst)).sum();
    println!(
        "gic-setup: timer PPI {} x{}, SPI {} x{} ({foreign_spis} before its alarm), SGI {OWN_SGI} x{}; other SGIs {other_sgis}, unhandled {}",
        u32::from(TIMER),
        TIMER_TAKEN.load(Ordering::SeqCst),
        u32::from(spi),
        SPI_TAKEN.load(Ordering::SeqCst) - foreign_spis,
        SGIS_TAKEN[OWN_SGI as usize].load(Ordering::SeqCst),
        irq::unhandled()
    );
    if !all || foreign_spis != 0 || other_sgis != 0 || irq::unhandled() != 0 {
        fail(format_args!("interrupts did not arrive as set up"));
    }
    println!("gic-setup: done");
}
