//! Configuration checks: every invalid system under `tests/invalid/` must be refused with exactly
//! the errors in the `.expected` file of the same name, and every shipped system under
//! `partitions/systems/` must pass.
//!
//! Each `tests/invalid/<rule>.toml` breaks one rule (its first line, a `#` comment, says which);
//! `tests/invalid/<rule>.expected` holds the full output: one `error: <path>:<line>: <message>`
//! line per problem, with paths relative to the repository root. The output is what
//! `system::load` reports, or, for a system that passes it, what loading its images and
//! planning it reports. Guest crates are never built here: a partition that must get as far as
//! the planner runs a file image from `tests/invalid/images/`.
//!
//! After changing a message on purpose, regenerate the expected files with
//!
//! ```text
//! TRAPLESS_BLESS=1 cargo test -p trapless-tests --test config
//! ```
//!
//! and read the diff before committing it. Blessing also writes the `.expected` file of a new
//! `.toml`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use trapless_tools::{planner, root, system};

/// Whether `TRAPLESS_BLESS=1` asks to rewrite the expected files.
fn blessing() -> bool {
    std::env::var_os("TRAPLESS_BLESS").is_some_and(|value| value == "1")
}

/// The files in `dir` whose names end with `.<extension>`, by stem, sorted.
fn files_with_extension(dir: &Path, extension: &str) -> BTreeMap<String, PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    let mut files = BTreeMap::new();
    for entry in entries {
        let path = entry.unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display())).path();
        if path.is_file() && path.extension().is_some_and(|ext| ext == extension) {
            let stem = path.file_stem().expect("a file name").to_string_lossy().into_owned();
            files.insert(stem, path);
        }
    }
    files
}

/// What checking and planning the system at `path` reports, with `root/` removed from paths;
/// `None` if the system is valid.
fn actual_output(path: &Path, root: &Path) -> Option<String> {
    let output = match system::load(path, root, None) {
        Err(diagnostics) => diagnostics.to_string(),
        Ok(system) => match planner::load_images(&system, &BTreeMap::new()) {
            Err(diagnostics) => diagnostics.to_string(),
            Ok(images) => match planner::plan(&system, images) {
                Err(diagnostics) => diagnostics.to_string(),
                Ok(_) => return None,
            },
        },
    };
    Some(output.replace(&format!("{}/", root.display()), ""))
}

/// A line diff of `expected` against `actual`: ` ` kept, `-` expected only, `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    // Longest common subsequence, filled from the end.
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] =
                if old[i] == new[j] { common[i + 1][j + 1] + 1 } else { common[i + 1][j].max(common[i][j + 1]) };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            let _ = writeln!(out, "  {}", old[i]);
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            let _ = writeln!(out, "- {}", old[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", new[j]);
            j += 1;
        }
    }
    if !expected.is_empty() && !expected.ends_with('\n') {
        out.push_str("(the expected file does not end with a newline)\n");
    }
    out
}

#[test]
fn invalid_configs_report_exactly_the_expected_errors() {
    let root = root();
    let dir = root.join("tests/invalid");
    let configs = files_with_extension(&dir, "toml");
    let expectations = files_with_extension(&dir, "expected");
    let bless = blessing();
    let mut failures: Vec<String> = Vec::new();

    assert!(!configs.is_empty(), "no invalid configs in {}", dir.display());
    for stem in expectations.keys().filter(|stem| !configs.contains_key(*stem)) {
        failures.push(format!("tests/invalid/{stem}.expected has no tests/invalid/{stem}.toml"));
    }

    for (stem, path) in &configs {
        let name = format!("tests/invalid/{stem}.toml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("cannot read {name}: {error}"));
        if !text.starts_with('#') {
            failures.push(format!("{name} must start with a `#` comment saying which rule it breaks"));
        }
        let Some(actual) = actual_output(path, &root) else {
            failures.push(format!("{name} is meant to be invalid, but it validates and plans successfully"));
            continue;
        };
        let expected_path = dir.join(format!("{stem}.expected"));
        if bless {
            std::fs::write(&expected_path, &actual)
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", expected_path.display()));
            continue;
        }
        let Some(expected_path) = expectations.get(stem) else {
            failures.push(format!(
                "{name} has no tests/invalid/{stem}.expected; it reports:\n{actual}(TRAPLESS_BLESS=1 writes it)"
            ));
            continue;
        };
        let expected = std::fs::read_to_string(expected_path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", expected_path.display()));
        if expected != actual {
            failures.push(format!(
                "{name}: the errors differ from tests/invalid/{stem}.expected (- expected, + actual):\n{}",
                diff(&expected, &actual).trim_end()
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "{} problem(s) with the invalid configs:\n\n{}\n\nIf a message changed on purpose, run \
         `TRAPLESS_BLESS=1 cargo test -p trapless-tests --test config` and review the diff.",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn shipped_systems_are_valid() {
    let root = root();
    let mut failures = Vec::new();
    for dir in [root.join("partitions/systems"), root.join("tests/systems")] {
        let systems = files_with_extension(&dir, "toml");
        assert!(!systems.is_empty(), "no systems in {}", dir.display());
        for path in systems.values() {
            if let Err(diagnostics) = system::load(path, &root, None) {
                failures.push(diagnostics.to_string());
            }
        }
    }
    assert!(failures.is_empty(), "shipped systems are invalid:\n{}", failures.concat());
}

#[test]
fn the_diff_marks_changed_lines() {
    assert_eq!(diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
    assert_eq!(diff("a\n", "a\nb\n"), "  a\n+ b\n");
    assert_eq!(diff("a", "a\n"), "  a\n(the expected file does not end with a newline)\n");
}
