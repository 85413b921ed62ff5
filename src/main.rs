//! mpspy: see Bitcoin Core's multiprocess IPC.

mod cli;
mod sink;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use mpspy_recorder::source::decode_pair;
use mpspy_recorder::{SchemaConfig, Session};
use mpspy_schema::sets;

use crate::cli::{Cli, Command, DecodeArgs, SchemaArgs};
use crate::sink::Sink;
use crate::sink::json::JsonLines;
use crate::sink::text::TextLines;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`mpspy … | head`) is a normal way to stop reading.
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("mpspy: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Decode(args) => decode(&args),
        Command::Demo(args) => demo(&args),
    }
}

pub(crate) fn schema_config(args: &SchemaArgs) -> Result<SchemaConfig> {
    let mut user = Vec::new();
    for path in &args.schema {
        let set = sets::load_user_schema(path, &args.include)
            .with_context(|| format!("--schema {}", path.display()))?;
        user.push(Arc::new(set));
    }
    Ok(SchemaConfig {
        choice: args.schemas.clone(),
        user,
    })
}

fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn output_sink(json: bool, timed: bool) -> Box<dyn Sink> {
    let out = io::BufWriter::new(io::stdout().lock());
    if json {
        Box::new(JsonLines::new(out))
    } else {
        Box::new(TextLines::new(out, timed))
    }
}

fn decode(args: &DecodeArgs) -> Result<ExitCode> {
    let config = schema_config(&args.schema)?;
    let c2s = read(&args.a_to_b)?;
    let s2c = read(&args.b_to_a)?;
    let source = format!("decode {} {}", args.a_to_b.display(), args.b_to_a.display());
    let label = format!("{} ⇄ {}", args.a_to_b.display(), args.b_to_a.display());
    let mut session = Session::new(config);
    session.set_untimed();
    session.start(&source, None);
    decode_pair(&mut session, 1, &label, &c2s, &s2c);
    let mut sink = output_sink(args.json, false);
    for e in session.drain() {
        sink.event(&e)?;
    }
    sink.finish()?;
    Ok(ExitCode::SUCCESS)
}

/// The built-in demo: decodes the shipped captures of a real bitcoin-node session.
fn demo(args: &cli::DemoArgs) -> Result<ExitCode> {
    const C2S: &[u8] = include_bytes!("../samples/pyclient.c2s.bin");
    const S2C: &[u8] = include_bytes!("../samples/pyclient.s2c.bin");
    let mut session = Session::new(SchemaConfig::default());
    session.set_untimed();
    session.start(
        "demo: pycapnp client ⇄ bitcoin-node master (shipped capture)",
        None,
    );
    decode_pair(&mut session, 1, "pyclient ⇄ bitcoin-node", C2S, S2C);
    let mut sink = output_sink(args.json, false);
    for e in session.drain() {
        sink.event(&e)?;
    }
    sink.finish()?;
    if !args.json && io::stdout().is_terminal() {
        let _ = writeln!(
            io::stderr(),
            "\n(this decoded a shipped capture; `mpspy decode A_TO_B B_TO_A` does the same for yours)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
