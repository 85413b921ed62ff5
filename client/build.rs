//! Generates the Rust bindings for the master schema set from the checked-in
//! CodeGeneratorRequest (`schema/compiled/master.bin`), so building needs no
//! `capnp` compiler binary.
//!
//! Files land in `$OUT_DIR/<schema path>_capnp.rs` (`init_capnp.rs`,
//! `mp/proxy_capnp.rs`, ...). Cross-file references in the generated code are
//! `crate::schema::<file>_capnp`, hence `default_parent_module(["schema"])`;
//! `src/schema.rs` includes each file under that name.

use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let request = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .join("..")
        .join("schema")
        .join("compiled")
        .join("master.bin");
    println!("cargo::rerun-if-changed={}", request.display());
    let bytes =
        std::fs::read(&request).map_err(|e| format!("reading {}: {e}", request.display()))?;
    // `run` reads the message through capnp::serialize, which copies the
    // segments into word-aligned storage, so the raw file bytes are fine here.
    capnpc::codegen::CodeGenerationCommand::new()
        .output_directory(std::env::var("OUT_DIR")?)
        .default_parent_module(vec!["schema".to_string()])
        .run(&bytes[..])?;
    Ok(())
}
