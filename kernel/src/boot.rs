//! Boot: the boot CPU reads the plan, turns the MMU on, checks the machine against the
//! platform, loads every partition and starts their first CPUs; secondary CPUs join here.

use crate::arch::{self, entry, firmware, gic, lpi, stage2::Stage2Map};
use crate::{console, firmware_dt, heap, println, state};
use alloc::vec::Vec;
use core::mem::size_of;
use trapless_arm64::blockmap::Regime;
use trapless_arm64::{cache, layout};
use trapless_plan::{Header, MIN_KERNEL_HEAP, MPIDR_AFFINITY_MASK, PartitionRecord, Plan, RegionKind};

/// Smallest heap the kernel starts with (the packer made room for it).
const MIN_HEAP: usize = MIN_KERNEL_HEAP as usize;

/// The boot CPU, from [`entry`] with the MMU off: nothing here may use atomics (locks, the
/// heap, the console) until `enable_el2` has turned the MMU on.
pub extern "C" fn primary_main(firmware_dtb: usize) -> ! {
    let payload = layout::image_end();
    // SAFETY: the packer appends the plan right after the image; a header's worth of bytes is
    // there whatever it holds, and `claimed_size` checks them before anything else is read.
    let header = unsafe { core::slice::from_raw_parts(payload as *const u8, size_of::<Header>()) };
    let Ok(size) = Plan::claimed_size(header) else {
        // No plan means no console to complain on.
        arch::halt()
    };
    // SAFETY: as above; `parse` checks every table and blob lies within `size` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(payload as *const u8, size as usize) };
    let Ok(plan) = Plan::parse(bytes) else { arch::halt() };
    let platform = plan.platform();

    let ram = platform.ram.base.0..platform.ram.end();
    // SAFETY: only this CPU runs, and no CPU uses the tables yet.
    #[allow(clippy::deref_addrof, reason = "a reference to a static mut must come from a raw pointer")]
    let map = unsafe { &mut *(&raw mut entry::EL2_MAP) };
    if map.build(ram, &[], Regime::El2).is_err() {
        arch::halt()
    }
    let (image_start, image_end) = (layout::image_start(), layout::image_end());
    // SAFETY: the image, its BSS, this stack and the tables were all written with the MMU (and
    // so the data cache) off: no cached copy of them holds anything newer than memory.
    unsafe { cache::invalidate(image_start, image_end - image_start) };
    // SAFETY: the map covers all RAM, where the kernel, its stacks and tables lie, identically.
    unsafe { trapless_arm64::mmu::enable_el2(map.root()) };

    let heap_start = (payload + plan.total_size()).next_multiple_of(4096);
    let kernel = platform.kernel;
    let fits = kernel.contains_span(image_start as u64, (heap_start + MIN_HEAP - image_start) as u64);
    if fits {
        // SAFETY: the rest of the kernel region belongs to the kernel alone (the planner keeps
        // partitions out of it).
        unsafe { heap::init(heap_start, kernel.end() as usize) };
    }
    console::init(platform);
    if !fits {
        refuse(&[alloc::format!(
            "the kernel was loaded at {image_start:#x} and needs up to {:#x}, outside its region {kernel} in platform {}",
            heap_start + MIN_HEAP,
            platform.name
        )]);
    }
    println!(
        "trapless: EL2 up on platform {} ({} CPUs); partitions: {}",
        platform.name,
        plan.cpus().len(),
        plan.partitions().len()
    );
    if let Err(problems) = firmware_dt::check(firmware_dtb, &plan) {
        refuse(&problems);
    }
    let gic_id_bits = gic::init(&plan).unwrap_or_else(|error| refuse(&[alloc::format!("{error}")]));
    let this_cpu = current_platform_cpu(&plan);
    if let Err(error) = lpi::init(&plan, gic_id_bits, this_cpu) {
        refuse(&[alloc::format!("doorbells: {error}")]);
    }
    crate::gic_emulation::init(&plan);

    if let Err(problem) = load_windows(&plan).and_then(|()| crate::emulated::init(&plan)) {
        refuse(&[problem]);
    }
    let mut maps = Vec::new();
    for (index, partition) in plan.partitions().iter().enumerate() {
        match load(&plan, index, partition) {
            Ok(map) => maps.push(map),
            Err(problem) => refuse(&[problem]),
        }
    }
    // The tables must be in memory before any CPU walks them.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
    state::publish(plan, maps);
    for partition in plan.partitions() {
        let cpu = partition.boot_cpu as usize;
        state::prepare_start(cpu, partition.entry.0, partition.dtb.load.0);
        if Some(cpu) != this_cpu && state::start_cpu(cpu, plan.cpus()[cpu].mpidr).is_err() {
            refuse(&[alloc::format!("CPU {cpu} of partition {} did not start", partition.name)]);
        }
    }
    match this_cpu {
        Some(cpu) => state::run_cpu(cpu),
        None => state::park(),
    }
}

/// A secondary CPU, from [`entry::secondary_entry`] with its MMU on and its stack set.
pub extern "C" fn secondary_main(cpu: usize) -> ! {
    state::run_cpu(cpu)
}

/// The platform index of the CPU running this, by its MPIDR.
fn current_platform_cpu(plan: &Plan<'_>) -> Option<usize> {
    use aarch64_cpu::registers::Readable;
    let mpidr = aarch64_cpu::registers::MPIDR_EL1.get() & MPIDR_AFFINITY_MASK;
    plan.cpus().iter().position(|cpu| cpu.mpidr == mpidr)
}

/// Clears a partition's RAM, copies its image and DTB in, makes them visible to a CPU with
/// its MMU off, and builds its stage 2.
fn load(plan: &Plan<'_>, index: usize, partition: &PartitionRecord) -> Result<Stage2Map, alloc::string::String> {
    let name = partition.name;
    let memory = partition.memory;
    for (what, blob) in [("image", &partition.image), ("device tree", &partition.dtb), ("initrd", &partition.initrd)] {
        if blob.size != 0 && !memory.contains_span(blob.load.0, blob.size) {
            return Err(alloc::format!("the {what} of partition {name} does not fit its memory {memory}"));
        }
    }
    let regions = plan.regions(partition);
    let owns_ram = regions
        .iter()
        .any(|region| region.kind() == RegionKind::Ram && region.pa == memory.base && region.size == memory.size);
    if regions.iter().any(|region| region.ipa.0 != region.pa.0) || !owns_ram {
        return Err(alloc::format!("the stage-2 map of partition {name} is not an identity map of its memory"));
    }
    let index = index as u32;
    let shares = |region: &&trapless_plan::RegionRecord| {
        plan.windows().iter().any(|window| {
            window.range == trapless_plan::AddrRange::new(region.pa.0, region.size)
                && (window.device == index || window.driver == index)
        })
    };
    if let Some(region) = regions.iter().filter(|region| region.kind() == RegionKind::SharedRam).find(|region| !shares(region)) {
        return Err(alloc::format!("partition {name} maps shared RAM at {} that is not a window of its links", region.pa));
    }
    let in_a_window = |region: &&trapless_plan::RegionRecord| {
        let range = trapless_plan::AddrRange::new(region.pa.0, region.size);
        region.kind() != RegionKind::SharedRam && plan.windows().iter().any(|window| window.range.overlaps(&range))
    };
    if let Some(region) = regions.iter().find(in_a_window) {
        return Err(alloc::format!("partition {name} maps {} of a window as other than shared RAM", region.pa));
    }

    // SAFETY: the partition's RAM is its own (the planner checked it overlaps nothing else and
    // the kernel checked the firmware has it), and no CPU runs the partition yet.
    unsafe { fill_memory(plan, partition) };
    let map = Stage2Map::new(regions)
        .map_err(|error| alloc::format!("stage 2 of partition {name}: {error}"))?;
    let cpus: Vec<usize> = plan.cpus_of(index as usize).collect();
    println!(
        "trapless: partition {name}: CPUs {cpus:?}, memory {memory}, VMID {}, entry {}",
        partition.vmid, partition.entry
    );
    Ok(map)
}

/// Clears the RAM of `partition`, copies its image, DTB and initial RAM disk in and cleans it
/// all to the point of coherency, for a CPU that starts with its MMU and caches off.
///
/// # Safety
///
/// The partition's RAM must be checked to be its own, its blobs to fit it (as [`load`] does),
/// and none of its CPUs may be running.
pub unsafe fn fill_memory(plan: &Plan<'_>, partition: &PartitionRecord) {
    let (base, size) = (partition.memory.base.0 as usize, partition.memory.size as usize);
    // SAFETY: the caller promises the RAM is the partition's alone, that nothing runs in it
    // and that the blobs fit it.
    unsafe {
        core::ptr::write_bytes(base as *mut u8, 0, size);
        for blob in [&partition.image, &partition.dtb, &partition.initrd] {
            let bytes = plan.blob(blob);
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), blob.load.0 as *mut u8, bytes.len());
        }
    }
    cache::clean_invalidate(base, size);
}

/// Clears every static virtio window and writes its header and configuration space, before
/// any partition can see it.
fn load_windows(plan: &Plan<'_>) -> Result<(), alloc::string::String> {
    let platform = plan.platform();
    let windows = plan.windows();
    for (index, window) in windows.iter().enumerate() {
        let range = window.range;
        let clashes = range.overlaps(&platform.kernel)
            || plan.partitions().iter().any(|partition| partition.memory.overlaps(&range))
            || windows[..index].iter().any(|other| other.range.overlaps(&range));
        if !platform.ram.contains_range(&range) || clashes {
            return Err(alloc::format!("window {range} is not RAM of its own"));
        }
        // Partitions map windows with 2 MiB blocks (docs/static-virtio.md).
        if !range.base.0.is_multiple_of(2 << 20) {
            return Err(alloc::format!("window {range} does not start on a 2 MiB boundary"));
        }
        let (base, size) = (range.base.0 as usize, range.size as usize);
        let init = plan.blob(&window.init);
        // SAFETY: the window is RAM that nothing else uses (checked above), and no partition
        // runs yet; `parse` checked the contents fit it.
        unsafe {
            core::ptr::write_bytes(base as *mut u8, 0, size);
            core::ptr::copy_nonoverlapping(init.as_ptr(), base as *mut u8, init.len());
        }
        cache::clean_invalidate(base, size);
        let name = |partition: u32| plan.partitions()[partition as usize].name;
        println!("trapless: window {range}: device {}, driver {}", name(window.device), name(window.driver));
    }
    Ok(())
}

/// Says why trapless will not start, then powers off.
fn refuse(problems: &[alloc::string::String]) -> ! {
    for problem in problems {
        println!("trapless: refusing to start: {problem}");
    }
    firmware::system_off();
    arch::halt()
}
