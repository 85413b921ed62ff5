//! The built-in schema sets, user schemas, and which set fits the traffic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use crate::registry::{SchemaError, SchemaSet};

/// Built-in sets, newest first (the order `auto` prefers when several fit).
pub const BUILTIN: [&str; 4] = ["master", "v31", "v30", "mpexample"];

const MASTER: &[u8] = include_bytes!("../compiled/master.bin");
const V31: &[u8] = include_bytes!("../compiled/v31.bin");
const V30: &[u8] = include_bytes!("../compiled/v30.bin");
const MPEXAMPLE: &[u8] = include_bytes!("../compiled/mpexample.bin");

/// Our `mp/proxy.capnp`, offered as an include directory to user schemas that import it.
const PROXY_CAPNP: &str = include_str!("../capnp/master/mp/proxy.capnp");

/// A built-in set by name (`master`, `v31`, `v30`, `mpexample`).
pub fn builtin(name: &str) -> Option<Arc<SchemaSet>> {
    static SETS: OnceLock<Vec<Arc<SchemaSet>>> = OnceLock::new();
    let sets = SETS.get_or_init(|| {
        [MASTER, V31, V30, MPEXAMPLE]
            .iter()
            .zip(BUILTIN)
            .map(|(bytes, name)| {
                // The embedded requests are checked by tests; failing here is a build defect.
                Arc::new(SchemaSet::from_request(name, bytes).expect("embedded schema set loads"))
            })
            .collect()
    });
    let i = BUILTIN.iter().position(|n| *n == name)?;
    Some(sets[i].clone())
}

/// The `--schemas` choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// One built-in set.
    Fixed(String),
    /// Infer per connection from the traffic.
    Auto,
}

impl std::str::FromStr for Choice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Choice::Auto),
            s if BUILTIN.contains(&s) => Ok(Choice::Fixed(s.to_string())),
            s => Err(format!(
                "unknown schema set '{s}' (choose one of: auto, {})",
                BUILTIN.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Choice::Fixed(s) => f.write_str(s),
            Choice::Auto => f.write_str("auto"),
        }
    }
}

/// The shape of a params or results struct as the sender allocated it.
///
/// A sender allocates with its own schema's sizes, so the shape fingerprints the sender's
/// version even where interface ids are equal (the digest's "passive version fingerprints").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A struct with these data words and pointers.
    Struct(u16, u16),
    /// A list, or something else that is not a struct.
    NotStruct,
    /// A null pointer (tells nothing).
    Null,
}

/// Does `set` have `interface.method` with params (or results) of this shape?
pub fn fits(set: &SchemaSet, interface: u64, method: u16, results: bool, shape: Shape) -> bool {
    let Some((_, m)) = set.method(interface, method) else {
        return false;
    };
    let id = if results { m.results } else { m.params };
    let Some(s) = set.struct_node(id) else {
        return true;
    };
    match shape {
        Shape::Null => true,
        Shape::NotStruct => false,
        Shape::Struct(d, p) => d == s.data_words && p == s.pointers,
    }
}

/// Loads a user schema: a compiled `CodeGeneratorRequest`, or a `.capnp` file compiled with the
/// `capnp` tool (our `mp/proxy.capnp` is on the import path, after `includes`).
pub fn load_user_schema(path: &Path, includes: &[PathBuf]) -> Result<SchemaSet, SchemaError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let io = |source| SchemaError::Io {
        path: path.display().to_string(),
        source,
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let is_capnp_source = path.extension().is_some_and(|e| e == "capnp");
    if !is_capnp_source {
        return SchemaSet::from_request(&name, &bytes).map_err(|e| {
            SchemaError::Compile(format!(
                "{}: not a compiled schema ({e}); pass a .capnp file or the output of \
                 `capnp compile -o- FILE.capnp`",
                path.display()
            ))
        });
    }
    let dir = std::env::temp_dir().join(format!("mpspy-include-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("mp")).map_err(io)?;
    std::fs::write(dir.join("mp/proxy.capnp"), PROXY_CAPNP).map_err(io)?;
    let mut cmd = Command::new("capnp");
    cmd.arg("compile").arg("-o-");
    for inc in includes {
        cmd.arg(format!("-I{}", inc.display()));
    }
    cmd.arg(format!("-I{}", dir.display()));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        cmd.arg(format!("--src-prefix={}", parent.display()));
    }
    cmd.arg(path);
    let out = cmd.output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| {
        SchemaError::Compile(format!(
            "{}: compiling a .capnp file needs the `capnp` tool ({e}); install Cap'n Proto \
             (Debian: capnproto) or pass a compiled request made with `capnp compile -o- {}`",
            path.display(),
            path.display()
        ))
    })?;
    if !out.status.success() {
        return Err(SchemaError::Compile(format!(
            "capnp compile {} failed:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        )));
    }
    SchemaSet::from_request(&name, &out.stdout)
}

/// The built-in set for a Bitcoin Core version line, e.g. `Bitcoin Core daemon version
/// v31.99.0-69c61f9f2f3d bitcoin-node` → `master`. 30.x → `v30`, 31.0–31.98 → `v31`, and the
/// 31.99 development series or anything newer → `master`. `None` when there is no version.
pub fn for_version(text: &str) -> Option<&'static str> {
    let at = text.find("version v")? + "version v".len();
    let mut parts = text[at..].split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some(match (major, minor) {
        (..=30, _) => "v30",
        (31, ..=98) => "v31",
        _ => "master",
    })
}

#[cfg(test)]
mod version_tests {
    use super::for_version;

    #[test]
    fn version_lines_pick_the_set() {
        assert_eq!(
            for_version("Bitcoin Core daemon version v31.99.0-69c61f9f2f3d bitcoin-node"),
            Some("master")
        );
        assert_eq!(
            for_version("Bitcoin Core daemon version v31.0 bitcoin-node"),
            Some("v31")
        );
        assert_eq!(
            for_version("Bitcoin Core daemon version v30.1.0 bitcoin-node"),
            Some("v30")
        );
        assert_eq!(
            for_version("Bitcoin Core daemon version v30.0"),
            Some("v30")
        );
        assert_eq!(for_version("Bitcoin Core version v32.0.0"), Some("master"));
        assert_eq!(for_version("usage: something"), None);
    }
}
