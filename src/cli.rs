//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mpspy_schema::sets::Choice;

/// See Bitcoin Core's multiprocess IPC: decode libmultiprocess Cap'n Proto traffic.
#[derive(Debug, Parser)]
#[command(name = "mpspy", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Decode a pair of one-direction raw streams (socat/strace dumps, mpspy captures).
    Decode(DecodeArgs),
    /// Decode a shipped capture of a real bitcoin-node session (no Bitcoin Core needed).
    Demo(DemoArgs),
}

/// Schema selection, shared by every command that decodes.
#[derive(Debug, Args)]
pub(crate) struct SchemaArgs {
    /// Schema set: master, v31, v30, mpexample, or auto (inferred per connection).
    #[arg(long, default_value = "auto", value_name = "SET")]
    pub(crate) schemas: Choice,
    /// An extra schema: a .capnp file (needs the `capnp` tool) or a compiled request.
    #[arg(long, value_name = "FILE")]
    pub(crate) schema: Vec<PathBuf>,
    /// Import directory for --schema .capnp files (our mp/proxy.capnp is always available).
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    pub(crate) include: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// Bytes the client (the side that sends Bootstrap) wrote.
    #[arg(value_name = "A_TO_B")]
    pub(crate) a_to_b: PathBuf,
    /// Bytes the server wrote.
    #[arg(value_name = "B_TO_A")]
    pub(crate) b_to_a: PathBuf,
    /// Write JSON Lines (see docs/json-lines.md) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    #[command(flatten)]
    pub(crate) schema: SchemaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Write JSON Lines instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}
