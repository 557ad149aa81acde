//! The host's half: lays records and blobs out into one plan.

use crate::{
    AddrRange, BLOB_ALIGN, BlobRef, CpuRecord, DoorbellRecord, FORMAT_VERSION, Header, Ipa, MAGIC,
    Name, OnFault, PartitionRecord, PhysAddr, PlatformRecord, RegionRecord, SliceRef, SpiRoute, TableRef, WindowRecord, EmulatedLinkRecord,
};
use alloc::vec::Vec;
use core::mem::size_of;
use zerocopy::IntoBytes;

/// A partition before layout: its records plus the bytes of its image, DTB and initial RAM
/// disk.
#[derive(Clone, Debug)]
pub struct PartitionDraft<'a> {
    pub name: Name,
    pub vmid: u16,
    pub restart_limit: u16,
    pub boot_cpu: u32,
    pub on_fault: OnFault,
    pub memory: AddrRange,
    pub entry: Ipa,
    pub image: &'a [u8],
    pub image_load: PhysAddr,
    pub dtb: &'a [u8],
    pub dtb_load: PhysAddr,
    /// Empty: no initial RAM disk.
    pub initrd: &'a [u8],
    pub initrd_load: PhysAddr,
    pub regions: Vec<RegionRecord>,
}

/// A static virtio window before layout: its range, partitions and first bytes.
#[derive(Clone, Debug)]
pub struct WindowDraft<'a> {
    pub range: AddrRange,
    pub device: u32,
    pub driver: u32,
    pub init: &'a [u8],
}

/// Everything that goes into a plan; [`PlanWriter::to_bytes`] lays it out.
#[derive(Clone, Debug)]
pub struct PlanWriter<'a> {
    pub platform: PlatformRecord,
    pub cpus: Vec<CpuRecord>,
    pub partitions: Vec<PartitionDraft<'a>>,
    pub spi_routes: Vec<SpiRoute>,
    pub doorbells: Vec<DoorbellRecord>,
    pub windows: Vec<WindowDraft<'a>>,
    pub emulated_links: Vec<EmulatedLinkRecord>,
}

impl<'a> PlanWriter<'a> {
    /// Lays the plan out: header, tables, then blobs (identical blobs are stored once).
    pub fn to_bytes(&self) -> Vec<u8> {
        let regions: Vec<RegionRecord> =
            self.partitions.iter().flat_map(|draft| draft.regions.iter().copied()).collect();

        let mut offset = size_of::<Header>();
        let mut place = |count: usize, record_size: usize| {
            let table = TableRef { offset: offset as u32, count: count as u32 };
            offset += count * record_size;
            table
        };
        let cpus = place(self.cpus.len(), size_of::<CpuRecord>());
        let partitions = place(self.partitions.len(), size_of::<PartitionRecord>());
        let region_table = place(regions.len(), size_of::<RegionRecord>());
        let spi_routes = place(self.spi_routes.len(), size_of::<SpiRoute>());
        let doorbells = place(self.doorbells.len(), size_of::<DoorbellRecord>());
        let window_table = place(self.windows.len(), size_of::<WindowRecord>());
        let emulated_links = place(self.emulated_links.len(), size_of::<EmulatedLinkRecord>());

        // Blobs, stored once each however many partitions share them.
        let mut blobs = BlobStore { end: offset, stored: Vec::new() };
        let mut first_region = 0;
        let records: Vec<PartitionRecord> = self
            .partitions
            .iter()
            .map(|draft| {
                let image = BlobRef {
                    offset: blobs.add(draft.image),
                    size: draft.image.len() as u64,
                    load: draft.image_load,
                };
                let dtb = BlobRef {
                    offset: blobs.add(draft.dtb),
                    size: draft.dtb.len() as u64,
                    load: draft.dtb_load,
                };
                let initrd = if draft.initrd.is_empty() {
                    BlobRef::default()
                } else {
                    BlobRef { offset: blobs.add(draft.initrd), size: draft.initrd.len() as u64, load: draft.initrd_load }
                };
                let regions = SliceRef { first: first_region, count: draft.regions.len() as u32 };
                first_region += draft.regions.len() as u32;
                PartitionRecord {
                    name: draft.name,
                    vmid: draft.vmid,
                    restart_limit: draft.restart_limit,
                    boot_cpu: draft.boot_cpu,
                    on_fault: draft.on_fault.code(),
                    reserved: 0,
                    memory: draft.memory,
                    entry: draft.entry,
                    image,
                    dtb,
                    initrd,
                    regions,
                }
            })
            .collect();
        let windows: Vec<WindowRecord> = self
            .windows
            .iter()
            .map(|draft| WindowRecord {
                range: draft.range,
                init: BlobRef { offset: blobs.add(draft.init), size: draft.init.len() as u64, load: draft.range.base },
                device: draft.device,
                driver: draft.driver,
            })
            .collect();
        let total_size = blobs.end.next_multiple_of(BLOB_ALIGN);

        let header = Header {
            magic: MAGIC,
            version: FORMAT_VERSION,
            header_size: size_of::<Header>() as u32,
            total_size: total_size as u64,
            platform: self.platform,
            cpus,
            partitions,
            regions: region_table,
            spi_routes,
            doorbells,
            windows: window_table,
            emulated_links,
        };
        let mut out = Vec::with_capacity(total_size);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(self.cpus.as_bytes());
        out.extend_from_slice(records.as_bytes());
        out.extend_from_slice(regions.as_bytes());
        out.extend_from_slice(self.spi_routes.as_bytes());
        out.extend_from_slice(self.doorbells.as_bytes());
        out.extend_from_slice(windows.as_bytes());
        out.extend_from_slice(self.emulated_links.as_bytes());
        for (bytes, at) in blobs.stored {
            out.resize(at as usize, 0);
            out.extend_from_slice(bytes);
        }
        out.resize(total_size, 0);
        out
    }
}

/// Blobs placed after the tables, each stored once.
struct BlobStore<'a> {
    /// One past the last byte placed so far.
    end: usize,
    stored: Vec<(&'a [u8], u64)>,
}

impl<'a> BlobStore<'a> {
    /// Places `bytes` (or finds an identical blob already placed) and returns its offset.
    fn add(&mut self, bytes: &'a [u8]) -> u64 {
        if let Some(&(_, at)) = self.stored.iter().find(|(stored, _)| *stored == bytes) {
            return at;
        }
        let at = self.end.next_multiple_of(BLOB_ALIGN);
        self.end = at + bytes.len();
        self.stored.push((bytes, at as u64));
        at as u64
    }
}
