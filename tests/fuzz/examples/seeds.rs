//! Writes the seed corpora under `corpus/`: real system descriptions for `system` and
//! `planner`, the real and invalid board descriptions for `platform`, and windows a well-behaved driver filled for `ring` (plus the odd hostile one).
//! Run it after an input format changes, from the repository:
//! `cargo run --manifest-path tests/fuzz/Cargo.toml --example seeds --target-dir target/fuzz-seeds`.
//! It leaves alone the `regression-*` inputs beside these: inputs that once crashed a target.

use std::path::{Path, PathBuf};
use trapless_fuzz::ring::{Params, SeedDriver};
use trapless_virtio::binding::Kind;
use trapless_virtio::device::{NET_HEADER, blk};

/// Systems every target starts from: the demo, the test systems that boot, and a few invalid
/// ones (each breaks one rule).
const SYSTEMS: &[&str] = &[
    "partitions/systems/qemu-demo.toml",
    "partitions/systems/bench-trap-emulate.toml",
    "tests/systems/doorbell.toml",
    "tests/systems/isolation.toml",
    "tests/systems/smp.toml",
    "tests/systems/uart.toml",
    "tests/systems/virtio.toml",
    "tests/systems/virtio-dt.toml",
    "tests/systems/virtio-poll.toml",
    "tests/systems/virtio-trap.toml",
];
const INVALID: &[&str] = &[
    "tests/invalid/several-problems.toml",
    "tests/invalid/link-window-overlaps-partition.toml",
    "tests/invalid/doorbell-lpi-twice.toml",
    "tests/invalid/memory-overlaps-gic.toml",
    "tests/invalid/platform-emulation-overlaps-device.toml",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn flat(path: &str) -> String {
    path.replace('/', "-")
}

fn main() {
    let root = trapless_tools::root();
    let corpus: PathBuf = root.join("tests/fuzz/corpus");

    for path in SYSTEMS.iter().chain(INVALID) {
        let text = std::fs::read(root.join(path)).unwrap();
        write(&corpus.join("system"), &flat(path), &text);
    }
    for path in SYSTEMS {
        let text = std::fs::read(root.join(path)).unwrap();
        write(&corpus.join("planner"), &flat(path), &text);
    }
    for dir in ["platform", "tests/invalid/platforms"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let file = if path.is_dir() { path.join("platform.toml") } else { path };
            let name = file.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            write(&corpus.join("platform"), &flat(&name), &std::fs::read(&file).unwrap());
        }
    }
    // The demo with images of other shapes (a NUL, then per partition: shape, size in pages,
    // [load page]), then damage to the plan: a count, then (position, byte) pairs.
    let demo = std::fs::read(root.join(SYSTEMS[0])).unwrap();
    let shapes: &[(&str, &[u8])] = &[
        ("images", &[6, 0x40, 0x00, 0, 0xff, 0x03]),
        ("fixed", &[3, 0x10, 0x00, 0x00, 0x20, 0x00, 0x00, 7, 0x01, 0x00, 0x10, 0x00, 0x00, 0x00]),
        ("damage", &[0, 0, 0, 0, 0, 0, 3, 0x20, 0x00, 0xff, 0x41, 0x00, 0x07, 0x90, 0x00, 0x01]),
    ];
    for (name, params) in shapes {
        let mut input = demo.clone();
        input.push(0);
        input.extend_from_slice(params);
        write(&corpus.join("planner"), &format!("qemu-demo-{name}"), &input);
    }

    let ring = corpus.join("ring");
    let params = |kind, queue_size, event_idx| Params {
        kind,
        read_only: false,
        event_idx,
        polling: false,
        rewrite: false,
        restart: false,
        early: false,
        queue_size,
        steps: 2,
        budgets: [8, 8, 8, 8],
    };
    const RECEIVE: usize = 0;
    const TRANSMIT: usize = 1;

    // Console: three receive buffers, two lines sent (one over two buffers).
    let mut console = SeedDriver::new(params(Kind::Console, 8, true));
    for _ in 0..3 {
        console.chain(RECEIVE, &[Err(16)]);
    }
    console.chain(TRANSMIT, &[Ok(b"hello, ")]);
    console.chain(TRANSMIT, &[Ok(b"trapless"), Ok(b" console\n")]);
    write(&ring, "console", &console.input());

    // The same, polling, one chain a step, the driver starting again between steps.
    let mut polling = SeedDriver::new(Params { polling: true, restart: true, event_idx: false, budgets: [1, 1, 1, 1], steps: 4, ..console.params });
    polling.chain(RECEIVE, &[Err(64)]);
    polling.chain(TRANSMIT, &[Ok(b"polled line\n")]);
    write(&ring, "console-polling-restart", &polling.input());

    // A driver already started when the device opens (the device partition restarted): that
    // generation is never served, the next one is.
    let mut early = SeedDriver::new(Params { early: true, restart: true, ..console.params });
    early.chain(RECEIVE, &[Err(64)]);
    early.chain(TRANSMIT, &[Ok(b"after a restart\n")]);
    write(&ring, "console-early-restart", &early.input());

    // Net: a frame echoed into a large enough buffer, and one too big for the next.
    let mut net = SeedDriver::new(params(Kind::Net, 16, true));
    let mut frame = vec![0u8; NET_HEADER];
    frame.extend((0..60u8).map(|byte| byte.wrapping_mul(7)));
    net.chain(RECEIVE, &[Err(1526)]);
    net.chain(RECEIVE, &[Err(32)]);
    net.chain(TRANSMIT, &[Ok(&frame)]);
    net.chain(TRANSMIT, &[Ok(&frame[..NET_HEADER]), Ok(&frame[NET_HEADER..])]);
    write(&ring, "net", &net.input());

    // Block: write two sectors at sector 3, read them back, flush, ask for the ID, read past
    // the end; then the same on a read-only disk, the driver writing its rings again each step.
    let header = |kind: u32, sector: u64| {
        let mut bytes = kind.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&sector.to_le_bytes());
        bytes
    };
    let data: Vec<u8> = (0..1024u32).map(|index| (index * 7 % 251) as u8).collect();
    for (name, read_only, rewrite) in [("block", false, false), ("block-read-only-rewrite", true, true)] {
        let mut block = SeedDriver::new(Params { read_only, rewrite, ..params(Kind::Block, 8, false) });
        block.chain(0, &[Ok(&header(blk::T_OUT, 3)), Ok(&data), Err(1)]);
        block.chain(0, &[Ok(&header(blk::T_IN, 3)), Err(1024), Err(1)]);
        block.chain(0, &[Ok(&header(blk::T_FLUSH, 0)), Err(1)]);
        block.chain(0, &[Ok(&header(blk::T_GET_ID, 0)), Err(blk::ID_BYTES), Err(1)]);
        block.chain(0, &[Ok(&header(blk::T_IN, 31)), Err(1024), Err(1)]);
        write(&ring, name, &block.input());
    }
}
