//! trapless's own hypercalls (see `trapless_abi::hypercall`), checked against the caller.

use trapless_abi::hypercall::{CONSOLE_WRITE, CONSOLE_WRITE_MAX, INVALID_PARAMETERS, LINK_NOTIFY, NOT_SUPPORTED, RESTARTS};
use trapless_plan::{AddrRange, Ipa};

/// A checked trapless hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// Print `len` bytes at `ipa` (inside the caller's RAM).
    ConsoleWrite { ipa: Ipa, len: u64 },
    /// The device of emulated link `link` used buffers of queue `queue` (the kernel checks both
    /// against the plan and the caller).
    LinkNotify { link: u64, queue: u64 },
    /// How many times the caller has been restarted.
    Restarts,
}

/// Decodes hypercall `function` with arguments `x1`, `x2` for a partition whose RAM is
/// `memory`. An error is the SMCCC code to return in `x0`.
pub fn decode(function: u32, args: [u64; 2], memory: &AddrRange) -> Result<Hypercall, i64> {
    match function {
        CONSOLE_WRITE => {
            let [ipa, len] = args;
            if len > CONSOLE_WRITE_MAX || !memory.contains_span(ipa, len) {
                return Err(INVALID_PARAMETERS);
            }
            Ok(Hypercall::ConsoleWrite { ipa: Ipa(ipa), len })
        }
        LINK_NOTIFY => {
            let [link, queue] = args;
            Ok(Hypercall::LinkNotify { link, queue })
        }
        RESTARTS => Ok(Hypercall::Restarts),
        _ => Err(NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: AddrRange = AddrRange::new(0x4400_0000, 0x1000);

    #[test]
    fn console_write_must_stay_in_the_callers_ram() {
        assert_eq!(
            decode(CONSOLE_WRITE, [0x4400_0f00, 0x100], &MEMORY),
            Ok(Hypercall::ConsoleWrite { ipa: Ipa(0x4400_0f00), len: 0x100 })
        );
        assert_eq!(decode(CONSOLE_WRITE, [0x4400_0f01, 0x100], &MEMORY), Err(INVALID_PARAMETERS));
        assert_eq!(decode(CONSOLE_WRITE, [0x4300_0000, 1], &MEMORY), Err(INVALID_PARAMETERS));
        assert_eq!(decode(CONSOLE_WRITE, [u64::MAX, 2], &MEMORY), Err(INVALID_PARAMETERS));
        assert_eq!(decode(CONSOLE_WRITE, [0x4400_0000, 257], &MEMORY), Err(INVALID_PARAMETERS));
    }

    #[test]
    fn link_notify_carries_its_link_and_queue() {
        assert_eq!(decode(LINK_NOTIFY, [2, 1], &MEMORY), Ok(Hypercall::LinkNotify { link: 2, queue: 1 }));
    }

    #[test]
    fn restarts_takes_no_arguments() {
        assert_eq!(decode(RESTARTS, [u64::MAX, u64::MAX], &MEMORY), Ok(Hypercall::Restarts));
    }

    #[test]
    fn unknown_functions_are_not_supported() {
        assert_eq!(decode(0xc600_00ff, [0, 0], &MEMORY), Err(NOT_SUPPORTED));
    }
}
