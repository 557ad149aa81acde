//! Doorbells: `[[doorbell]]` in a system. One partition rings another by storing an EventID to
//! the GIC ITS's `GITS_TRANSLATER`, which raises an LPI on a CPU of the receiver, with no exit
//! to EL2 on either side. This module checks the declarations and gives each doorbell its
//! EventID and LPI; `docs/doorbells.md` describes the whole mechanism.

use crate::diagnostic::{Diagnostic, Source};
use crate::link::LinkQueue;
use crate::platform::Platform;
use crate::system::{Partition, valid_name};
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;
use trapless_plan::{FIRST_LPI, NAME_CAPACITY};

/// `[[doorbell]]` as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DoorbellToml {
    name: Spanned<String>,
    /// The partition that rings it.
    from: Spanned<String>,
    /// The partition it rings.
    to: Spanned<String>,
    /// The receiver's CPU that takes the LPI (a platform CPU index; default: its first CPU).
    cpu: Option<Spanned<i64>>,
    /// The EventID (default: the lowest free one).
    event: Option<Spanned<i64>>,
    /// The LPI INTID (default: the lowest free one from 8192).
    lpi: Option<Spanned<i64>>,
}

/// A checked doorbell, before its EventID and LPI are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doorbell {
    pub name: String,
    /// Line of its `name`.
    pub line: usize,
    /// Partition indexes.
    pub from: usize,
    pub to: usize,
    /// Platform CPU index, owned by `to`.
    pub cpu: usize,
    pub event: Option<u32>,
    pub lpi: Option<u32>,
    /// For a doorbell a `[[link]]` needs, which queue it serves and which side it rings; `None`
    /// for a `[[doorbell]]`.
    pub link: Option<LinkQueue>,
}

impl Doorbell {
    /// What the doorbell is, for messages.
    pub fn describe(&self) -> String {
        match self.link {
            None => format!("doorbell '{}'", self.name),
            Some(queue) => format!("the {} doorbell of queue {} of link '{}'", queue.direction(), queue.queue, self.name),
        }
    }
}

/// A doorbell with its EventID and LPI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoorbellPlan {
    pub name: String,
    pub from: usize,
    pub to: usize,
    pub cpu: usize,
    pub event: u32,
    pub lpi: u32,
    /// See [`Doorbell::link`]: link doorbells appear in their link's device-tree nodes, not in
    /// the doorbells node's names.
    pub link: Option<LinkQueue>,
}

impl DoorbellPlan {
    /// Whether partition `index` rings it itself: it sends it, and EL2 does not ring it in its
    /// place. Such a partition needs the doorbell page.
    pub fn sent_by(&self, index: usize) -> bool {
        self.from == index && !self.link.is_some_and(|queue| queue.el2_rings)
    }
}

/// Checks the `[[doorbell]]`s of a system whose partitions are `partitions`, pushing every
/// problem to `problems`.
pub fn check(
    source: &Source,
    raw: &[Spanned<DoorbellToml>],
    partitions: &[Partition],
    platform: &Platform,
    problems: &mut Vec<Diagnostic>,
) -> Vec<Doorbell> {
    let at = |span: &Range<usize>, message: String| source.error(span, message);
    let its = platform.gic.its;
    let mut doorbells: Vec<Doorbell> = Vec::new();
    // Who took each explicit value first: (value, doorbell name, line).
    let mut events: Vec<(u32, String, usize)> = Vec::new();
    let mut lpis: Vec<(u32, String, usize)> = Vec::new();
    for spanned in raw {
        let raw = spanned.get_ref();
        let name = raw.name.get_ref().as_str();
        let line = source.line(&raw.name.span());
        let mut ok = true;
        let mut fail = |span: &Range<usize>, message: String| {
            problems.push(at(span, message));
            ok = false;
        };
        if let Some(first) = doorbells.iter().find(|other| other.name == name) {
            fail(&raw.name.span(), format!("doorbell name '{name}' is used twice (first at line {})", first.line));
        } else if !valid_name(name) {
            fail(
                &raw.name.span(),
                format!("doorbell name '{name}' must be 1 to {NAME_CAPACITY} characters of a-z, 0-9 and '-', starting with a letter"),
            );
        }
        if its.is_none() {
            fail(&raw.name.span(), format!("doorbell '{name}' needs a GIC ITS, and platform '{}' has none", platform.name));
        } else if platform.gic.doorbell_path().is_none() {
            fail(
                &raw.name.span(),
                format!(
                    "doorbell '{name}' is rung by a CPU store, and {}: use a [[link]] whose sides both poll (poll = [\"device\", \"driver\"]) instead",
                    crate::platform::no_path(platform)
                ),
            );
        }
        let partition = |field: &Spanned<String>, role: &str, fail: &mut dyn FnMut(&Range<usize>, String)| {
            let wanted = field.get_ref();
            let found = partitions.iter().position(|partition| &partition.name == wanted);
            if found.is_none() {
                fail(&field.span(), format!("doorbell '{name}' {role} partition '{wanted}', which the system does not have"));
            }
            found
        };
        let from = partition(&raw.from, "is rung by", &mut fail);
        let to = partition(&raw.to, "rings", &mut fail);
        if let (Some(from), Some(to)) = (from, to)
            && from == to
        {
            fail(
                &raw.to.span(),
                format!("doorbell '{name}' goes from partition '{}' to itself (use SGIs between a partition's own CPUs)", partitions[to].name),
            );
        }

        let receiver_cpus = to.map_or(&[][..], |to| partitions[to].cpus.as_slice());
        let cpu = match &raw.cpu {
            None => receiver_cpus.first().copied(),
            Some(cpu) => {
                let wanted = *cpu.get_ref();
                let owned = usize::try_from(wanted).ok().filter(|wanted| receiver_cpus.contains(wanted));
                if owned.is_none() && to.is_some() {
                    fail(
                        &cpu.span(),
                        format!(
                            "doorbell '{name}' targets CPU {wanted}, which partition '{}' does not own (it has CPUs {:?})",
                            raw.to.get_ref(),
                            receiver_cpus
                        ),
                    );
                }
                owned
            }
        };

        // Without an ITS there is nothing to number (and that is reported above).
        let event = raw.event.as_ref().filter(|_| its.is_some()).and_then(|event| {
            let limit = its.map_or(1, |its| 1u64 << its.event_bits);
            let range = format!("0 to {} (the ITS has {} EventID bits)", limit - 1, its.map_or(0, |its| its.event_bits));
            claim(event, "EventID", 0..limit, range, &mut events, name, line, &mut fail)
        });
        let lpi = raw.lpi.as_ref().filter(|_| its.is_some()).and_then(|lpi| {
            let top = its.map_or(0, |its| (1u64 << its.lpi_id_bits) - 1);
            let range = format!("{FIRST_LPI} to {top}, the LPIs of platform '{}'", platform.name);
            claim(lpi, "LPI", u64::from(FIRST_LPI)..top + 1, range, &mut lpis, name, line, &mut fail)
        });

        if let (true, Some(from), Some(to), Some(cpu)) = (ok, from, to, cpu) {
            doorbells.push(Doorbell { name: name.to_string(), line, from, to, cpu, event, lpi, link: None });
        } else {
            // Keep the name, so that a later duplicate is still reported against this line.
            doorbells.push(Doorbell { name: name.to_string(), line, from: 0, to: 0, cpu: 0, event: None, lpi: None, link: None });
        }
    }
    doorbells
}

/// Takes the explicit `value` (an EventID or an LPI, `what`) of doorbell `name` at `line` if it
/// lies in `allowed` (described as `range`) and no earlier doorbell has it in `taken`;
/// otherwise reports why through `fail`.
#[allow(clippy::too_many_arguments, reason = "one call site per kind of value, each naming every part")]
fn claim(
    value: &Spanned<i64>,
    what: &str,
    allowed: Range<u64>,
    range: String,
    taken: &mut Vec<(u32, String, usize)>,
    name: &str,
    line: usize,
    fail: &mut dyn FnMut(&Range<usize>, String),
) -> Option<u32> {
    let number = *value.get_ref();
    let Some(number) = u32::try_from(number).ok().filter(|&number| allowed.contains(&u64::from(number))) else {
        fail(&value.span(), format!("{what} {number} of doorbell '{name}' is outside {range}"));
        return None;
    };
    if let Some((_, other, other_line)) = taken.iter().find(|(used, ..)| *used == number) {
        fail(&value.span(), format!("{what} {number} of doorbell '{name}' is already used by doorbell '{other}' (line {other_line})"));
        return None;
    }
    taken.push((number, name.to_string(), line));
    Some(number)
}

/// Gives every doorbell without an explicit EventID or LPI the lowest free one, in the order
/// they are listed (explicit values are taken first, wherever they are listed). Returns the
/// index of a doorbell for which none is left.
pub fn assign(doorbells: &[Doorbell], event_bits: u8, lpi_id_bits: u8) -> Result<Vec<DoorbellPlan>, usize> {
    let mut events: Vec<u32> = doorbells.iter().filter_map(|doorbell| doorbell.event).collect();
    let mut lpis: Vec<u32> = doorbells.iter().filter_map(|doorbell| doorbell.lpi).collect();
    let lowest_free = |taken: &mut Vec<u32>, from: u32, limit: u64| {
        let free = (from..).take_while(|&value| u64::from(value) < limit).find(|value| !taken.contains(value))?;
        taken.push(free);
        Some(free)
    };
    doorbells
        .iter()
        .enumerate()
        .map(|(index, doorbell)| {
            let event = doorbell.event.or_else(|| lowest_free(&mut events, 0, 1 << event_bits)).ok_or(index)?;
            let lpi = doorbell.lpi.or_else(|| lowest_free(&mut lpis, FIRST_LPI, 1 << lpi_id_bits)).ok_or(index)?;
            Ok(DoorbellPlan {
                name: doorbell.name.clone(),
                from: doorbell.from,
                to: doorbell.to,
                cpu: doorbell.cpu,
                event,
                lpi,
                link: doorbell.link,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doorbell(name: &str, event: Option<u32>, lpi: Option<u32>) -> Doorbell {
        Doorbell { name: name.into(), line: 1, from: 0, to: 1, cpu: 1, event, lpi, link: None }
    }

    #[test]
    fn explicit_values_stay_and_the_rest_take_the_lowest_free() {
        let plans = assign(
            &[doorbell("a", None, None), doorbell("b", Some(0), Some(8192)), doorbell("c", None, Some(9000))],
            16,
            16,
        )
        .unwrap();
        let assigned: Vec<(u32, u32)> = plans.iter().map(|plan| (plan.event, plan.lpi)).collect();
        assert_eq!(assigned, [(1, 8193), (0, 8192), (2, 9000)]);
    }

    #[test]
    fn running_out_names_the_doorbell() {
        // One EventID bit: EventIDs 0 and 1 only.
        let doorbells = [doorbell("a", None, None), doorbell("b", None, None), doorbell("c", None, None)];
        assert_eq!(assign(&doorbells, 1, 16), Err(2));
        // 14 INTID bits: LPIs 8192 to 16383.
        assert_eq!(assign(&[doorbell("a", None, Some(16383)), doorbell("b", None, None)], 16, 14).unwrap()[1].lpi, 8192);
    }
}
