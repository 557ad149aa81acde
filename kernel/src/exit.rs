//! What EL2 does when a partition's CPU exits to it: count the exit, then serve PSCI, the
//! console and link hypercalls, the trapped GIC registers and emulated register blocks (the GIC
//! distributor and redistributor pages, `mmio-trap` links), or, on any other stage-2 fault,
//! stop the partition or give it an external abort, as its `on-fault` policy says. What a
//! partition passes here is checked before use; at worst it stops itself.

use crate::arch::el2::{self, gic_cpu_interface};
use crate::arch::vectors::{ExceptionKind, GuestFrame};
use crate::state::{self, EXITS};
use smccc::psci::error::INTERNAL_FAILURE;
use trapless_abi::hypercall::CONSOLE_WRITE_MAX;
use trapless_kernel_core::exits::{ExitClass, exception_class};
use trapless_kernel_core::fault::{Fault, StopReason, Syndrome};
use trapless_kernel_core::gic_sysreg::{self, Access};
use trapless_kernel_core::hypercall::{self, Hypercall};
use trapless_kernel_core::psci::Decision;
use trapless_plan::OnFault;

/// `ESR_EL2.ISS`.
const ISS_MASK: u64 = 0x1ff_ffff;

/// Called by the vectors with the saved registers of the exiting CPU.
pub extern "C" fn handle_exit(frame: &mut GuestFrame, kind: u64) {
    let cpu = el2::current_cpu();
    let partition = state::partition_of(cpu);
    let esr = el2::esr();
    let kind = ExceptionKind::from_raw(kind);
    let class = match kind {
        ExceptionKind::Sync => ExitClass::from_esr(esr),
        ExceptionKind::Irq | ExceptionKind::Fiq | ExceptionKind::SError => ExitClass::Other,
    };
    if state::is_stopped(partition) {
        // A CPU of a stopped partition, faulting on its revoked stage 2: not the partition's
        // doing, so not among the exits it took while it ran.
        EXITS[partition].record_parked();
        state::park_stopped(cpu);
    }
    EXITS[partition].record(class);
    match (kind, class) {
        (ExceptionKind::Sync, ExitClass::Hvc) => serve_call(frame, cpu, partition),
        (ExceptionKind::Sync, ExitClass::Smc) => {
            // A trapped SMC returns to itself; step over it.
            frame.elr += 4;
            serve_call(frame, cpu, partition);
        }
        (ExceptionKind::Sync, ExitClass::Sysreg) => match gic_sysreg::decode(esr & ISS_MASK) {
            Some(access) => {
                serve_gic_register(frame, cpu, partition, access);
                frame.elr += 4;
            }
            None => stop_on_fault(partition, esr, frame.elr),
        },
        (ExceptionKind::Sync, ExitClass::DataAbort) => {
            let iss = esr & ISS_MASK;
            let emulated = el2::fault_ipa(esr).is_some_and(|ipa| {
                crate::gic_emulation::access(partition, ipa.0, iss, frame) || crate::emulated::access(partition, ipa.0, iss, frame)
            });
            if emulated {
                frame.elr += 4;
            } else {
                abort_or_stop(partition, esr, frame);
            }
        }
        (ExceptionKind::Sync, ExitClass::InsnAbort) => abort_or_stop(partition, esr, frame),
        // With HCR_EL2.IMO/FMO clear no interrupt should come here; if one does, it is not the
        // partition's fault: resume it.
        (ExceptionKind::Irq | ExceptionKind::Fiq, _) => {}
        _ => stop_on_fault(partition, esr, frame.elr),
    }
}

/// A stage-2 fault EL2 does not emulate: by the partition's `on-fault` policy, an external
/// abort it takes at its own vectors, or a stop.
fn abort_or_stop(partition: usize, esr: u64, frame: &mut GuestFrame) {
    let policy = state::kernel().plan.partitions()[partition].on_fault();
    if policy == OnFault::Abort && crate::gic_emulation::inject_abort(partition, esr, frame).is_ok() {
        return;
    }
    stop_on_fault(partition, esr, frame.elr)
}

/// Stops `partition` with a report of the exit it took at `pc`.
fn stop_on_fault(partition: usize, esr: u64, pc: u64) -> ! {
    let syndrome = Syndrome { esr, ipa: el2::fault_ipa(esr), pc };
    state::stop_partition(partition, StopReason::Fault(Fault::from_syndrome(&syndrome)))
}

/// Serves an `HVC` or `SMC`: PSCI, trapless hypercalls, or `NOT_SUPPORTED`.
fn serve_call(frame: &mut GuestFrame, cpu: usize, partition: usize) {
    let function = frame.x[0] as u32;
    let args = [frame.x[1], frame.x[2], frame.x[3]];
    let result = match state::serve_psci(cpu, partition, function, args) {
        Some(Decision::Return(value)) => value,
        Some(Decision::StartCpu { cpu: target, mpidr, .. }) => match state::start_cpu(target, mpidr) {
            Ok(()) => 0,
            Err(()) => i64::from(INTERNAL_FAILURE) as u64,
        },
        Some(Decision::TurnOff) => state::park(),
        Some(Decision::Stop(reason)) => state::stop_partition(partition, reason),
        None => hypercall_result(partition, function, [args[0], args[1]]) as u64,
    };
    frame.x[0] = result;
}

fn hypercall_result(partition: usize, function: u32, args: [u64; 2]) -> i64 {
    let name = state::kernel().plan.partitions()[partition].name;
    let memory = state::kernel().plan.partitions()[partition].memory;
    match hypercall::decode(function, args, &memory) {
        Ok(Hypercall::ConsoleWrite { ipa, len }) => {
            // Copy first: the partition's other CPUs may be writing the buffer as we read it.
            let mut bytes = [0u8; CONSOLE_WRITE_MAX as usize];
            for (offset, byte) in bytes[..len as usize].iter_mut().enumerate() {
                let address = (ipa.0 as usize + offset) as *const u8;
                // SAFETY: decode checked that [ipa, ipa + len) lies in the partition's RAM,
                // which EL2 maps identically (IPA = PA). Volatile: the bytes may change under us.
                *byte = unsafe { address.read_volatile() };
            }
            crate::console::write_framed(partition, name.as_str(), &bytes[..len as usize]);
            0
        }
        Ok(Hypercall::LinkNotify { link, queue }) => crate::emulated::notify(partition, link, queue),
        Ok(Hypercall::Restarts) => i64::from(state::restarts(partition)),
        Err(code) => code,
    }
}

/// Serves a trapped GIC CPU-interface register access: SGIs go only to the partition's own
/// CPUs; the other registers are accessed on its behalf.
fn serve_gic_register(frame: &mut GuestFrame, cpu: usize, partition: usize, access: Access) {
    let Access { register, read, rt } = access;
    crate::gic_emulation::count_cpu_interface(partition, register.is_sgi() && !read);
    if read {
        if rt < 31 {
            frame.x[rt] = gic_cpu_interface::read(register);
        }
        return;
    }
    let value = if rt < 31 { frame.x[rt] } else { 0 };
    if !register.is_sgi() {
        gic_cpu_interface::write(register, value);
        return;
    }
    let kernel = state::kernel();
    let caller = kernel.plan.cpus()[cpu].mpidr;
    for write in gic_sysreg::restrict(value, kernel.affinities(partition), caller) {
        gic_cpu_interface::write(register, write);
    }
}

/// An exception taken from EL2 itself: a kernel bug. Reports it and powers off.
pub extern "C" fn handle_el2_exception(kind: u64, esr: u64, elr: u64, far: u64) -> ! {
    panic!(
        "exception in EL2: {:?}, class {:#x}, ESR {esr:#x}, ELR {elr:#x}, FAR {far:#x}",
        ExceptionKind::from_raw(kind),
        exception_class(esr)
    );
}
