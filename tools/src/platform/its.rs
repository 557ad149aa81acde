//! `[gic]` of a platform, as far as doorbells go: the ITS, what it implements, and how (or
//! whether) a CPU's store reaches its translation: the *doorbell path*. On QEMU a store to
//! `GITS_TRANSLATER` carries DeviceID 0; on silicon it is how the SoC is wired, so each board
//! states it and EL2 proves it at boot (`docs/boards.md`).

use crate::size::Bytes;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::ops::Range;
use toml::Spanned;
use trapless_plan::AddrRange;

/// DeviceIDs a flat ITS device table of 256 4 KiB pages reaches with 8-byte entries. (An ITS
/// with larger entries reaches fewer: the kernel refuses such a table at boot.)
pub const MAX_DOORBELL_DEVICE: u32 = 256 * 4096 / 8;

/// Offset of the ITS translation frame from the ITS base.
pub const ITS_TRANSLATION_FRAME: u64 = 0x1_0000;
/// Offset of `GITS_TRANSLATER` in the translation frame.
pub const GITS_TRANSLATER: u64 = 0x40;

/// `doorbell-path` as written: `"none"`, or `{ translater = <address>, device-id = <n> }`.
#[derive(Debug)]
pub enum DoorbellPathToml {
    /// CPU stores do not reach the ITS's translation (or not in a way anyone has shown).
    None,
    CpuStore { translater: Bytes, device_id: u32 },
}

/// The table form of `doorbell-path`.
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct CpuStoreToml {
    translater: Bytes,
    device_id: u32,
}

impl<'de> Deserialize<'de> for DoorbellPathToml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PathVisitor;

        impl<'de> Visitor<'de> for PathVisitor {
            type Value = DoorbellPathToml;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"none\" or { translater = <address>, device-id = <DeviceID> }")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                if text == "none" { Ok(DoorbellPathToml::None) } else { Err(E::invalid_value(de::Unexpected::Str(text), &self)) }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let table = CpuStoreToml::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(DoorbellPathToml::CpuStore { translater: table.translater, device_id: table.device_id })
            }
        }

        deserializer.deserialize_any(PathVisitor)
    }
}

/// How a CPU's store of an EventID reaches the ITS's translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DoorbellPath {
    /// Where the store goes: `GITS_TRANSLATER`, in the ITS's translation frame.
    pub translater: u64,
    /// The DeviceID the store carries: every doorbell is mapped under it.
    pub device: u32,
}

/// The GIC ITS and what CPU stores to it look like.
#[derive(Clone, Copy, Debug)]
pub struct Its {
    /// Its control frame and, 64 KiB on, its translation frame.
    pub range: AddrRange,
    /// INTID bits the GIC implements: LPIs are 8192 to 2^`lpi_id_bits` - 1.
    pub lpi_id_bits: u8,
    /// EventID bits the ITS implements.
    pub event_bits: u8,
    /// How CPU stores reach it, or `None` if they do not: then no doorbell can be rung by a
    /// CPU, neither a partition's nor EL2's.
    pub path: Option<DoorbellPath>,
}

impl Its {
    /// The translation frame.
    pub fn translation_frame(&self) -> AddrRange {
        AddrRange::new(self.range.base.0 + ITS_TRANSLATION_FRAME, ITS_TRANSLATION_FRAME)
    }

    /// The one page a partition that rings doorbells gets: the one holding the translater.
    pub fn doorbell_page(&self) -> Option<AddrRange> {
        self.path.map(|path| AddrRange::new(path.translater & !0xfff, 0x1000))
    }
}

/// The `[gic]` keys about the ITS, as written.
pub struct ItsFacts<'a> {
    pub its: &'a Option<Spanned<crate::platform::RangeToml>>,
    pub lpi_id_bits: &'a Option<Spanned<u8>>,
    pub event_bits: &'a Option<Spanned<u8>>,
    pub path: &'a Option<Spanned<DoorbellPathToml>>,
}

/// Checks the ITS facts of a platform, reporting problems through `problem`.
pub fn check(facts: ItsFacts<'_>, problem: &mut dyn FnMut(&Range<usize>, String)) -> Option<Its> {
    let (Some(its), Some(lpi_id_bits), Some(event_bits), Some(path)) = (facts.its, facts.lpi_id_bits, facts.event_bits, facts.path) else {
        if let Some(its) = facts.its {
            problem(&its.span(), "an ITS needs lpi-id-bits, its-event-bits and doorbell-path in [gic]".to_string());
        }
        return None;
    };
    let range = its.get_ref().range();
    if range.size < 2 * ITS_TRANSLATION_FRAME || range.base.0 % ITS_TRANSLATION_FRAME != 0 {
        problem(&its.span(), format!("the ITS {range} must be 64 KiB aligned and hold both of its 64 KiB frames"));
    }
    let (lpi_id_bits_span, lpi_id_bits) = (lpi_id_bits.span(), *lpi_id_bits.get_ref());
    if !(14..=32).contains(&lpi_id_bits) {
        problem(&lpi_id_bits_span, format!("lpi-id-bits must be 14 to 32, not {lpi_id_bits}"));
    }
    let (event_bits_span, event_bits) = (event_bits.span(), *event_bits.get_ref());
    if !(1..=32).contains(&event_bits) {
        problem(&event_bits_span, format!("its-event-bits must be 1 to 32, not {event_bits}"));
    }
    let path = match path.get_ref() {
        DoorbellPathToml::None => None,
        &DoorbellPathToml::CpuStore { translater, device_id } => {
            let frame = AddrRange::new(range.base.0.saturating_add(ITS_TRANSLATION_FRAME), ITS_TRANSLATION_FRAME);
            if !translater.0.is_multiple_of(4) || !frame.contains_span(translater.0, 4) {
                problem(
                    &path.span(),
                    format!(
                        "the doorbell path's translater {} must be a 4-byte aligned address in the ITS translation frame {frame}",
                        trapless_plan::PhysAddr(translater.0)
                    ),
                );
            }
            if device_id >= MAX_DOORBELL_DEVICE {
                problem(
                    &path.span(),
                    format!(
                        "the doorbell path's device-id {device_id} is too large: trapless gives the ITS a flat device table, which reaches DeviceIDs below {MAX_DOORBELL_DEVICE}"
                    ),
                );
            }
            Some(DoorbellPath { translater: translater.0, device: device_id })
        }
    };
    Some(Its { range, lpi_id_bits, event_bits, path })
}

/// Why nothing can ring a doorbell on `platform` (which has an ITS, but states that CPU stores
/// do not reach it), for the messages of the systems that would need to.
pub fn no_path(platform: &crate::platform::Platform) -> String {
    format!("CPU stores do not reach the GIC ITS of platform '{}' (doorbell-path = \"none\")", platform.name)
}
