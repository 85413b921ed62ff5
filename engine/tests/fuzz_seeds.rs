//! The `session` fuzz target's committed inputs, on stable: every seed and every regression
//! input in `fuzz/` runs through [`mpspy_engine::fuzz::session`] on each `cargo test`, so CI
//! replays what the fuzzer found without nightly. The seeds and the dictionary are made here
//! from the real captures and the schemas; `MPSPY_WRITE_SEEDS=1 cargo test -p mpspy-engine
//! --test fuzz_seeds` rewrites them after a change to the input format or the fixtures.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use mpspy_engine::framing::{Piece, split_all};
use mpspy_engine::fuzz::{self, SessionInput};
use mpspy_schema::rpc::{self, Rpc};
use mpspy_schema::sets;
use mpspy_schema::wire::Message;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn fixture(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(path);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Files of a directory by name (none when it does not exist: no regressions yet).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.expect("directory entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).expect("readable input"))
        })
        .collect()
}

/// The client's and the server's streams of each real capture.
fn captures() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let pair = |name, c2s: &str, s2c: &str| (name, fixture(c2s), fixture(s2c));
    vec![
        pair(
            "pyclient",
            "captures/bitcoin-node-master/pyclient.c2s.bin",
            "captures/bitcoin-node-master/pyclient.s2c.bin",
        ),
        pair(
            "getblockcount",
            "captures/bitcoin-node-master/cli-getblockcount.c2s.bin",
            "captures/bitcoin-node-master/cli-getblockcount.s2c.bin",
        ),
        pair(
            "mpcalculator",
            "captures/mpexample/mpcalculator.mpexample-to-child.bin",
            "captures/mpexample/mpcalculator.child-to-mpexample.bin",
        ),
        pair(
            "mpprinter",
            "captures/mpexample/mpprinter.mpexample-to-child.bin",
            "captures/mpexample/mpprinter.child-to-mpexample.bin",
        ),
    ]
}

/// The pycapnp-built `alltypes` frames (one stream holding both sides), parted by sender:
/// bootstraps and calls are the client's, everything else the server's.
fn alltypes_streams() -> (Vec<u8>, Vec<u8>) {
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    for p in split_all(&fixture("alltypes/frames.bin")) {
        let Piece::Frame { bytes, .. } = p else {
            panic!("frames.bin frames cleanly")
        };
        let (m, _) = Message::parse(&bytes).expect("frame parses");
        match rpc::decode(&m).expect("envelope decodes") {
            Rpc::Bootstrap { .. } | Rpc::Call(_) => c2s.extend_from_slice(&bytes),
            _ => s2c.extend_from_slice(&bytes),
        }
    }
    (c2s, s2c)
}

/// The seeds, by file name: each capture raw (causal order, so calls and returns pair up and
/// results decode), timed with whole reads, and timed with odd reads under a fixed schema set.
fn seeds() -> BTreeMap<String, Vec<u8>> {
    let base = SessionInput {
        schemas: 0,
        alltypes: false,
        raw: false,
        close_early: false,
        time_step: 0,
        turns: 0,
        reads: [0; 4],
        c2s: &[],
        s2c: &[],
    };
    let mut out = BTreeMap::new();
    let (all_c2s, all_s2c) = alltypes_streams();
    let mut streams = captures();
    streams.push(("alltypes", all_c2s, all_s2c));
    for (name, c2s, s2c) in &streams {
        let alltypes = *name == "alltypes";
        let input = SessionInput {
            alltypes,
            c2s,
            s2c,
            ..base.clone()
        };
        let variants = [
            (
                "raw-auto",
                SessionInput {
                    raw: true,
                    ..input.clone()
                },
            ),
            (
                "whole-auto",
                SessionInput {
                    turns: 0b1010_1010,
                    time_step: 1,
                    ..input.clone()
                },
            ),
            (
                "chunked-master",
                SessionInput {
                    schemas: 1,
                    turns: 0b0110_1001,
                    reads: [7, 64, 1, 200],
                    time_step: 2,
                    close_early: true,
                    ..input.clone()
                },
            ),
        ];
        for (how, v) in variants {
            out.insert(format!("{name}-{how}"), v.to_bytes());
        }
    }
    out
}

/// A libFuzzer dictionary of every interface id the schemas know (little endian, as a Call
/// carries it): ids are looked up by hash, so comparison tracing cannot guess them.
fn dictionary() -> String {
    let mut out = String::from(
        "# Interface ids of the built-in schema sets and alltypes, as Call.interfaceId holds them.\n\
         # Made by engine/tests/fuzz_seeds.rs (MPSPY_WRITE_SEEDS=1).\n",
    );
    let mut all: Vec<_> = sets::BUILTIN
        .iter()
        .filter_map(|n| sets::builtin(n))
        .collect();
    all.push(fuzz::alltypes());
    let mut seen = BTreeMap::new();
    for set in &all {
        for (id, i) in set.interfaces() {
            seen.entry(id).or_insert_with(|| i.name.clone());
        }
    }
    for (id, name) in seen {
        let bytes: String = id
            .to_le_bytes()
            .iter()
            .map(|b| format!("\\x{b:02x}"))
            .collect();
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        out.push_str(&format!("{name}_{id:016x}=\"{bytes}\"\n"));
    }
    out
}

#[test]
fn seeds_and_regressions_run_clean() {
    let dir = fuzz_dir();
    let seeds = files(&dir.join("seeds/session"));
    assert!(!seeds.is_empty(), "seeds are committed");
    let regressions = files(&dir.join("regressions/session"));
    for (name, data) in seeds.iter().chain(&regressions) {
        eprintln!("{name}");
        fuzz::session(data);
    }
}

#[test]
fn seeds_and_dictionary_are_made_from_the_fixtures() {
    let dir = fuzz_dir();
    let seed_dir = dir.join("seeds/session");
    let dict_path = dir.join("session.dict");
    let want = seeds();
    let dict = dictionary();
    if std::env::var_os("MPSPY_WRITE_SEEDS").is_some() {
        fs::create_dir_all(&seed_dir).expect("seed directory");
        for (name, data) in &want {
            fs::write(seed_dir.join(name), data).expect("seed written");
        }
        // Stale seeds go last, so the replay test running beside this one never reads a
        // file that is being removed.
        for name in files(&seed_dir).keys().filter(|n| !want.contains_key(*n)) {
            fs::remove_file(seed_dir.join(name)).expect("stale seed removed");
        }
        fs::write(&dict_path, &dict).expect("dictionary written");
    }
    let have = files(&seed_dir);
    assert!(
        have == want,
        "fuzz/seeds/session differs from what the fixtures give; rerun with MPSPY_WRITE_SEEDS=1"
    );
    assert_eq!(
        fs::read_to_string(&dict_path).unwrap_or_default(),
        dict,
        "fuzz/session.dict is stale; rerun with MPSPY_WRITE_SEEDS=1"
    );
    let total: usize = have.values().map(Vec::len).sum();
    assert!(total < 256 * 1024, "seeds stay small ({total} bytes)");
}
