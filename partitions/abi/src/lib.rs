//! The contract between trapless and its partitions: hypercall numbers and the names used in the
//! device trees trapless generates. The host tools, the EL2 kernel and the guest runtime all take
//! these from here, so the three cannot drift apart. `docs/partitions.md` describes the contract.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

/// trapless's own hypercalls: SMCCC fast calls (SMC64 convention, owner 6, "vendor specific
/// hypervisor service") made with `HVC #0`. Each one is a control-path exit to EL2, counted like
/// every other. Results come back in `x0` as SMCCC return codes.
pub mod hypercall {
    /// Writes bytes to the EL2 console, which prefixes each line with `[<partition>] `.
    /// `x1` = IPA of the bytes (inside the caller's RAM), `x2` = length (at most
    /// [`CONSOLE_WRITE_MAX`]). Returns [`SUCCESS`] or [`INVALID_PARAMETERS`].
    pub const CONSOLE_WRITE: u32 = 0xC600_0001;
    /// Most bytes one [`CONSOLE_WRITE`] takes.
    pub const CONSOLE_WRITE_MAX: u64 = 256;
    /// The device side of a `mmio-trap` static virtio link notifies its driver about a queue:
    /// EL2 sets the used-buffer bit of the emulated `InterruptStatus` and raises the link's SPI
    /// on the driver. `x1` = the link's number (its device tree's `trapless,notify-hypercall`),
    /// `x2` = the queue. Returns [`SUCCESS`], or [`INVALID_PARAMETERS`] for a link this
    /// partition is not the device of or a queue it does not have.
    pub const LINK_NOTIFY: u32 = 0xC600_0002;
    /// How many times EL2 has restarted the calling partition (`on-stop = "restart"`), in
    /// `x0`: 0 on its first start. A restarted partition finds its RAM loaded afresh; this is
    /// how it knows it ran before.
    pub const RESTARTS: u32 = 0xC600_0003;

    /// SMCCC: the call succeeded.
    pub const SUCCESS: i64 = 0;
    /// SMCCC: no such function.
    pub const NOT_SUPPORTED: i64 = -1;
    /// SMCCC: an argument is out of range.
    pub const INVALID_PARAMETERS: i64 = -2;
}

/// Names in the generated device trees.
pub mod dt {
    /// The node that describes trapless to a partition.
    pub const HYPERVISOR_PATH: &str = "/hypervisor";
    /// Its `compatible`.
    pub const HYPERVISOR_COMPATIBLE: &str = "trapless,hypervisor";
    /// Property of the hypervisor node: the partition's name, as in the system TOML.
    pub const PARTITION_NAME: &str = "trapless,partition";
    /// What `/chosen/stdout-path` holds when the partition's console is the
    /// [`CONSOLE_WRITE`](crate::hypercall::CONSOLE_WRITE) hypercall rather than a UART of its
    /// own: the hypervisor node itself.
    pub const HYPERCALL_CONSOLE_PATH: &str = HYPERVISOR_PATH;
    /// `/psci` `method` for partitions: PSCI is served by EL2 behind `HVC` (SMC works too).
    pub const PSCI_METHOD: &str = "hvc";

    /// The big-endian 32-bit cells of a property value (a trailing partial cell is ignored).
    pub fn cells(value: &[u8]) -> impl Iterator<Item = u32> + '_ {
        value.chunks_exact(4).map(|cell| u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
    }

    /// The `(address, size)` pairs of a `reg` value with the given cell counts (at most two
    /// cells each; a size of zero cells reads as 0).
    pub fn reg_entries(
        value: &[u8],
        address_cells: usize,
        size_cells: usize,
    ) -> impl Iterator<Item = (u64, u64)> + '_ {
        let stride = 4 * (address_cells + size_cells);
        value
            .chunks_exact(stride.max(4))
            .filter(move |_| stride != 0)
            .map(move |entry| (join(&entry[..4 * address_cells]), join(&entry[4 * address_cells..])))
    }

    /// An MPIDR's affinity packed into 32 bits as `GICR_TYPER` reports it (Aff3.Aff2.Aff1.Aff0,
    /// a byte each): how the doorbells node names the CPU that takes an LPI.
    pub fn pack_affinity(mpidr: u64) -> u32 {
        (((mpidr >> 8) & 0xff00_0000) | (mpidr & 0xff_ffff)) as u32
    }

    /// Joins big-endian cells into one number.
    fn join(bytes: &[u8]) -> u64 {
        cells(bytes).fold(0, |value, cell| (value << 32) | u64::from(cell))
    }
}

#[cfg(test)]
mod tests {
    use super::dt::{cells, reg_entries};

    #[test]
    fn reads_cells_and_reg() {
        let value = [0, 0, 0, 1, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x04, 0, 0, 0];
        assert_eq!(cells(&value).collect::<Vec<_>>(), [1, 0x4000_0000, 0, 0x0400_0000]);
        let pairs: Vec<_> = reg_entries(&value, 2, 2).collect();
        assert_eq!(pairs, [(0x1_4000_0000, 0x400_0000)]);
        let cpus: Vec<_> = reg_entries(&value[..8], 1, 0).collect();
        assert_eq!(cpus, [(1, 0), (0x4000_0000, 0)]);
        assert_eq!(reg_entries(&value, 0, 0).count(), 0);
    }

    #[test]
    fn packs_affinity_like_gicr_typer() {
        assert_eq!(super::dt::pack_affinity(0x12_0034_5678), 0x1234_5678);
        assert_eq!(super::dt::pack_affinity(0x8000_0001), 0x01);
    }
}
