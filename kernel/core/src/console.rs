//! Framing of partition output on the EL2 console: every line a partition writes through the
//! console hypercall starts with `[<name>] `, and control characters are neutralised, so no
//! partition can forge a line that looks like EL2's own (`trapless: ...`) or another partition's.

/// Per-partition framing state: whether the next byte starts a line.
#[derive(Clone, Copy, Debug)]
pub struct LineFramer {
    at_line_start: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineFramer {
    pub const fn new() -> Self {
        Self { at_line_start: true }
    }

    /// Frames `bytes` written by partition `name`, passing the result to `out` in pieces.
    pub fn frame(&mut self, name: &str, bytes: &[u8], mut out: impl FnMut(&[u8])) {
        for &byte in bytes {
            if byte == b'\r' {
                continue;
            }
            if self.at_line_start {
                out(b"[");
                out(name.as_bytes());
                out(b"] ");
                self.at_line_start = false;
            }
            let shown = match byte {
                b'\n' | b'\t' | 0x20..=0x7e => byte,
                _ => b'?',
            };
            out(&[shown]);
            self.at_line_start = byte == b'\n';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(framer: &mut LineFramer, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        framer.frame("alpha", bytes, |piece| out.extend_from_slice(piece));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prefixes_every_line_across_writes() {
        let mut framer = LineFramer::new();
        assert_eq!(framed(&mut framer, b"one\ntw"), "[alpha] one\n[alpha] tw");
        assert_eq!(framed(&mut framer, b"o\n"), "o\n");
        assert_eq!(framed(&mut framer, b"three\n"), "[alpha] three\n");
    }

    #[test]
    fn cannot_forge_an_el2_line() {
        let mut framer = LineFramer::new();
        let out = framed(&mut framer, b"x\rtrapless: partition beta stopped\x1b[2K\n");
        assert_eq!(out, "[alpha] xtrapless: partition beta stopped?[2K\n");
    }
}
