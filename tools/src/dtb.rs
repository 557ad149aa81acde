//! The device tree each partition boots with: only what it owns, as the platform describes it.
//! `docs/device-tree.md` documents the binding; the golden files in `tests/golden/` pin it.

use crate::doorbell::DoorbellPlan;
use crate::link::{LinkPlan, Role};
use crate::planner::PartitionPlan;
use crate::platform::{Platform, Trigger};
use trapless_abi::dt;
use trapless_plan::AddrRange;
use trapless_virtio::binding::dt as virtio_dt;
use vm_fdt::{FdtWriter, FdtWriterResult};

const GIC_PHANDLE: u32 = 1;
/// Clock `n` of the platform gets phandle `FIRST_CLOCK_PHANDLE + n`; the window of link `n`
/// the first one after the clocks' plus `n`.
const FIRST_CLOCK_PHANDLE: u32 = 2;

/// `interrupts` cells: SPI / PPI, and the trigger flags of the GIC binding.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_EDGE_RISING: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;

/// Two cells each for address and size, as the root node declares.
fn reg(ranges: &[AddrRange]) -> Vec<u64> {
    ranges.iter().flat_map(|range| [range.base.0, range.size]).collect()
}

/// The node path of a platform device in a partition's tree.
fn device_path(platform: &Platform, device: usize) -> String {
    let device = &platform.devices[device];
    format!("/{}@{:x}", device.node, device.reg.base.0)
}

/// Where the partition's console output goes: its own PL011 if it has one (the platform's
/// console first, if it is one), else the console hypercall.
pub fn stdout_path(platform: &Platform, partition: &PartitionPlan) -> String {
    let is_pl011 = |&&device: &&usize| platform.devices[device].compatible.iter().any(|c| c == "arm,pl011");
    // trapless's guest runtime drives PL011s only: a partition given another UART (the DW
    // 8250 of a Rock 5B) prints through the console hypercall.
    let console = platform.console.filter(|console| partition.devices.contains(console)).filter(|console| is_pl011(&console));
    match console.or_else(|| partition.devices.iter().find(is_pl011).copied()) {
        Some(device) => device_path(platform, device),
        None => dt::HYPERCALL_CONSOLE_PATH.to_string(),
    }
}

/// The device tree blob of `partition`, partition number `index` among those `doorbells` and
/// `links` join.
pub fn generate(
    platform: &Platform,
    partition: &PartitionPlan,
    index: usize,
    doorbells: &[DoorbellPlan],
    links: &[LinkPlan],
) -> Vec<u8> {
    write(platform, partition, index, doorbells, links).expect("vm-fdt accepts every tree this module writes")
}

fn write(
    platform: &Platform,
    partition: &PartitionPlan,
    index: usize,
    doorbells: &[DoorbellPlan],
    links: &[LinkPlan],
) -> FdtWriterResult<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "trapless,partition")?;
    fdt.property_string("model", &format!("trapless partition {} on {}", partition.name, platform.name))?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = fdt.begin_node("chosen")?;
    if !partition.bootargs.is_empty() {
        fdt.property_string("bootargs", &partition.bootargs)?;
    }
    fdt.property_string("stdout-path", &stdout_path(platform, partition))?;
    if let Some(initrd) = partition.initrd_range() {
        fdt.property_u64("linux,initrd-start", initrd.base.0)?;
        fdt.property_u64("linux,initrd-end", initrd.end())?;
    }
    fdt.end_node(chosen)?;

    let hypervisor = fdt.begin_node(dt::HYPERVISOR_PATH.trim_start_matches('/'))?;
    fdt.property_string("compatible", dt::HYPERVISOR_COMPATIBLE)?;
    fdt.property_string(dt::PARTITION_NAME, &partition.name)?;
    fdt.end_node(hypervisor)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list("compatible", vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()])?;
    fdt.property_string("method", dt::PSCI_METHOD)?;
    fdt.end_node(psci)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", partition.memory.base.0))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &reg(&[partition.memory]))?;
    fdt.end_node(memory)?;

    write_cpus(&mut fdt, platform, partition)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    let cells: Vec<u32> = platform.timer.iter().flat_map(|&ppi| [GIC_PPI, ppi, IRQ_LEVEL_HIGH]).collect();
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    write_gic(&mut fdt, platform, partition)?;
    write_doorbells(&mut fdt, platform, index, doorbells)?;
    write_links(&mut fdt, platform, index, links)?;

    let mut clocks: Vec<usize> =
        partition.devices.iter().flat_map(|&device| platform.devices[device].clocks.iter().copied()).collect();
    clocks.sort_unstable();
    clocks.dedup();
    for clock in clocks {
        let spec = &platform.clocks[clock];
        let node = fdt.begin_node(&spec.name)?;
        fdt.property_string("compatible", "fixed-clock")?;
        fdt.property_u32("#clock-cells", 0)?;
        fdt.property_u32("clock-frequency", spec.frequency)?;
        if let Some(output) = &spec.output_name {
            fdt.property_string("clock-output-names", output)?;
        }
        fdt.property_phandle(FIRST_CLOCK_PHANDLE + clock as u32)?;
        fdt.end_node(node)?;
    }

    let mut devices = partition.devices.clone();
    devices.sort_by_key(|&device| platform.devices[device].reg.base);
    for device in devices {
        let spec = &platform.devices[device];
        let node = fdt.begin_node(device_path(platform, device).trim_start_matches('/'))?;
        fdt.property_string_list("compatible", spec.compatible.clone())?;
        fdt.property_array_u64("reg", &reg(&[spec.reg]))?;
        if !spec.interrupts.is_empty() {
            let cells: Vec<u32> = spec
                .interrupts
                .iter()
                .flat_map(|interrupt| {
                    let flags = match interrupt.trigger {
                        Trigger::LevelHigh => IRQ_LEVEL_HIGH,
                        Trigger::EdgeRising => IRQ_EDGE_RISING,
                    };
                    [GIC_SPI, interrupt.spi, flags]
                })
                .collect();
            fdt.property_array_u32("interrupts", &cells)?;
        }
        if !spec.clocks.is_empty() {
            let phandles: Vec<u32> = spec.clocks.iter().map(|&clock| FIRST_CLOCK_PHANDLE + clock as u32).collect();
            fdt.property_array_u32("clocks", &phandles)?;
            fdt.property_string_list("clock-names", spec.clock_names.clone())?;
        }
        fdt.end_node(node)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

fn write_cpus(fdt: &mut FdtWriter, platform: &Platform, partition: &PartitionPlan) -> FdtWriterResult<()> {
    let mpidrs: Vec<u64> = partition.cpus.iter().map(|&cpu| platform.cpus[cpu]).collect();
    let wide = mpidrs.iter().any(|&mpidr| mpidr > u64::from(u32::MAX));
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", if wide { 2 } else { 1 })?;
    fdt.property_u32("#size-cells", 0)?;
    for mpidr in mpidrs {
        let cpu = fdt.begin_node(&format!("cpu@{mpidr:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,armv8")?;
        if wide {
            fdt.property_u64("reg", mpidr)?;
        } else {
            fdt.property_u32("reg", mpidr as u32)?;
        }
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)
}

/// The GICv3 node: the distributor's address (EL2 emulates it for the partition) and one
/// redistributor region per run of consecutive CPUs the partition owns. Where the frames of two
/// CPUs are not two 64 KiB frames apart (a GICv4's are four), `redistributor-stride` says so:
/// the partition's `GICR_TYPER` shows no virtual-LPI support, from which a driver would
/// otherwise infer two.
fn write_gic(fdt: &mut FdtWriter, platform: &Platform, partition: &PartitionPlan) -> FdtWriterResult<()> {
    let gic = &platform.gic;
    let mut cpus = partition.cpus.clone();
    cpus.sort_unstable();
    let mut regions: Vec<AddrRange> = Vec::new();
    for cpu in cpus {
        let frame = gic.redistributors.base.0 + cpu as u64 * gic.redistributor_stride;
        match regions.last_mut() {
            Some(last) if last.end() == frame => last.size += gic.redistributor_stride,
            _ => regions.push(AddrRange::new(frame, gic.redistributor_stride)),
        }
    }
    let node = fdt.begin_node(&format!("intc@{:x}", gic.distributor.base.0))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    fdt.property_u32("#redistributor-regions", regions.len() as u32)?;
    if gic.redistributor_stride != 2 * crate::platform::REDISTRIBUTOR_FRAME {
        fdt.property_u64("redistributor-stride", gic.redistributor_stride)?;
    }
    let mut ranges = vec![gic.distributor];
    ranges.extend(regions);
    fdt.property_array_u64("reg", &reg(&ranges))?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(node)
}

/// The doorbells node: where to ring (for a partition that rings any doorbell, its links'
/// included), with which EventIDs (for the named doorbells it rings), and which LPI on which
/// CPU each named doorbell that rings it raises. Link doorbells are listed in their links'
/// nodes instead. See `docs/doorbells.md`.
fn write_doorbells(fdt: &mut FdtWriter, platform: &Platform, index: usize, doorbells: &[DoorbellPlan]) -> FdtWriterResult<()> {
    let rings_any = doorbells.iter().any(|doorbell| doorbell.sent_by(index));
    let named = |doorbell: &&DoorbellPlan| doorbell.link.is_none();
    let rings: Vec<&DoorbellPlan> = doorbells.iter().filter(named).filter(|doorbell| doorbell.from == index).collect();
    let receives: Vec<&DoorbellPlan> = doorbells.iter().filter(named).filter(|doorbell| doorbell.to == index).collect();
    // Doorbells exist only where CPU stores reach the ITS (the checker sees to it).
    let Some(path) = platform.gic.doorbell_path().filter(|_| rings_any || !receives.is_empty()) else {
        return Ok(());
    };
    let page = AddrRange::new(path.translater & !0xfff, 0x1000);
    let name = if rings_any { format!("doorbells@{:x}", page.base.0) } else { "doorbells".to_string() };
    let node = fdt.begin_node(&name)?;
    fdt.property_string("compatible", "trapless,doorbells")?;
    if rings_any {
        fdt.property_array_u64("reg", &reg(&[page]))?;
        fdt.property_u32("trapless,translater", (path.translater & 0xfff) as u32)?;
    }
    if !rings.is_empty() {
        fdt.property_string_list("trapless,ring-names", rings.iter().map(|doorbell| doorbell.name.clone()).collect())?;
        let events: Vec<u32> = rings.iter().map(|doorbell| doorbell.event).collect();
        fdt.property_array_u32("trapless,ring-events", &events)?;
    }
    if !receives.is_empty() {
        fdt.property_string_list(
            "trapless,receive-names",
            receives.iter().map(|doorbell| doorbell.name.clone()).collect(),
        )?;
        // Each: the LPI, and the affinity of the CPU that takes it packed as in GICR_TYPER
        // (Aff3.Aff2.Aff1.Aff0, a byte each).
        let lpis: Vec<u32> = receives
            .iter()
            .flat_map(|doorbell| [doorbell.lpi, dt::pack_affinity(platform.cpus[doorbell.cpu])])
            .collect();
        fdt.property_array_u32("trapless,receive-lpis", &lpis)?;
    }
    fdt.end_node(node)
}

/// The nodes of each link the partition is on: its window under `/reserved-memory`, and the
/// link's node with what this side needs: a `trapless,virtio-static` node, or, for the driver
/// of a `mmio-trap` link, a `virtio,mmio` one. See `docs/static-virtio.md`.
fn write_links(fdt: &mut FdtWriter, platform: &Platform, index: usize, links: &[LinkPlan]) -> FdtWriterResult<()> {
    // (the window's phandle, the link, this partition's side of it)
    let mine: Vec<(u32, &LinkPlan, Role)> = links
        .iter()
        .enumerate()
        .filter_map(|(number, link)| {
            let phandle = FIRST_CLOCK_PHANDLE + platform.clocks.len() as u32 + number as u32;
            Some((phandle, link, link.role_of(index)?))
        })
        .collect();
    if mine.is_empty() {
        return Ok(());
    }
    let reserved = fdt.begin_node("reserved-memory")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    for &(phandle, link, _) in &mine {
        let node = fdt.begin_node(&format!("{}@{:x}", virtio_dt::WINDOW_NODE, link.window.base.0))?;
        fdt.property_string("compatible", virtio_dt::WINDOW_COMPATIBLE)?;
        fdt.property_array_u64("reg", &reg(&[link.window]))?;
        fdt.property_null("no-map")?;
        fdt.property_phandle(phandle)?;
        fdt.end_node(node)?;
    }
    fdt.end_node(reserved)?;

    for (phandle, link, role) in mine {
        match link.emulated {
            // The driver of a `mmio-trap` link sees a standard virtio-mmio device, whose
            // registers EL2 emulates.
            Some(emulated) if role == Role::Driver => {
                let node = fdt.begin_node(&format!("virtio@{:x}", emulated.registers.base.0))?;
                fdt.property_string("compatible", virtio_dt::MMIO_COMPATIBLE)?;
                fdt.property_array_u64("reg", &reg(&[emulated.registers]))?;
                fdt.property_array_u32("interrupts", &[GIC_SPI, emulated.spi, IRQ_EDGE_RISING])?;
                fdt.property_null("dma-coherent")?;
                fdt.property_u32(virtio_dt::WINDOW, phandle)?;
                // So that trapless's `Hal` puts the rings at the window layout's offsets.
                write_link_properties(fdt, link, role)?;
                fdt.end_node(node)?;
            }
            _ => {
                let node = fdt.begin_node(&format!("{}{}", virtio_dt::NODE_PREFIX, link.name))?;
                fdt.property_string("compatible", virtio_dt::COMPATIBLE)?;
                fdt.property_u32(virtio_dt::WINDOW, phandle)?;
                write_link_properties(fdt, link, role)?;
                // Per queue: the EventID this side stores to ring the peer, and the LPI (and its
                // CPU) the peer's rings raise here. None where the receiving side polls. The
                // device of an emulated link notifies through EL2 instead, with the link's number.
                let rings = link.rings(role);
                if !rings.is_empty() {
                    let events: Vec<u32> = rings.iter().map(|doorbell| doorbell.event).collect();
                    fdt.property_array_u32(virtio_dt::NOTIFY_EVENTS, &events)?;
                }
                if let Some(emulated) = link.emulated {
                    fdt.property_u32(virtio_dt::NOTIFY_HYPERCALL, emulated.index as u32)?;
                }
                let rung = link.rung_by_peer(role);
                if !rung.is_empty() {
                    let lpis: Vec<u32> = rung
                        .iter()
                        .flat_map(|doorbell| [doorbell.lpi, dt::pack_affinity(platform.cpus[doorbell.cpu])])
                        .collect();
                    fdt.property_array_u32(virtio_dt::NOTIFY_LPIS, &lpis)?;
                }
                fdt.end_node(node)?;
            }
        }
    }
    Ok(())
}

/// What both sides know of a link, whatever its transport: its name, this side's role, and
/// the fixed device.
fn write_link_properties(fdt: &mut FdtWriter, link: &LinkPlan, role: Role) -> FdtWriterResult<()> {
    fdt.property_string(virtio_dt::LINK, &link.name)?;
    fdt.property_string(virtio_dt::ROLE, role.name())?;
    fdt.property_u32(virtio_dt::DEVICE_ID, link.kind.device_id())?;
    fdt.property_u64(virtio_dt::FEATURES, link.features)?;
    fdt.property_u32(virtio_dt::QUEUES, link.kind.queue_count().into())?;
    fdt.property_u32(virtio_dt::QUEUE_SIZE, link.queue_size.into())?;
    fdt.property(virtio_dt::CONFIG, &link.config)
}
