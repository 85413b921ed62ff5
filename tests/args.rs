//! mpspy's emulation of Bitcoin Core's option handling (`mpspy_bitcoin::args`) against what
//! Bitcoin Core really does with a command line and its files.
//!
//! Each table row is a command line, the files to create, and what the real program did with it
//! (bitcoin-node v31.99.0-69c61f9f2f3d): the unix sockets it listened on, its `Config file:` and
//! `Included configuration file` lines, or the error it stopped at. Every row checks `plan()`
//! against that column, so a clone without the binaries still tests the emulation; with the
//! real binaries (`MPSPY_PEERS_DIR`) every row also runs the program and checks that the column
//! is still what it does, so the table cannot drift into describing the emulation instead.
//! The same for `bitcoin-cli -ipcconnect` and for the `bitcoin` wrapper's choice between
//! `bitcoin-node` and `bitcoind`.
//!
//! Placeholders in the rows: `{W}` is the row's scratch directory (the program's working
//! directory), `{D}` is `{W}/d` (created: the usual `-datadir`), `{H}` is `{W}/h/.bitcoin` (the
//! default datadir: `$HOME` is `{W}/h`), `{LEN107}`/`{LEN108}` a path under `{W}` of that many
//! bytes. A file whose name ends in `/` is a directory.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use mpspy_bitcoin::args::{self as bitcoin, Env};

use crate::peers::{KillOnDrop, Scratch, peer};

/// What the node logs when there is no config file in the datadir.
const NO_CONF: Option<&str> = Some("{D}/bitcoin.conf (not found, skipping)");
/// What it logs when it read `{D}/bitcoin.conf`.
const D_CONF: Option<&str> = Some("{D}/bitcoin.conf");
/// What it logs when it read `{H}/bitcoin.conf`.
const H_CONF: Option<&str> = Some("{H}/bitcoin.conf");

/// Prepended to every row's node arguments: the console log on stdout without timestamps, no
/// P2P or RPC (so parallel rows cannot clash on ports, and mainnet rows stay offline). IPC
/// works without RPC. The plan is made for the same arguments.
const NODE_EXTRA: [&str; 5] = [
    "-printtoconsole=1",
    "-logtimestamps=0",
    "-listen=0",
    "-server=0",
    "-connect=0",
];

/// One command line of bitcoin-node and what the real node did with it.
#[derive(Clone, Copy)]
struct Row {
    what: &'static str,
    args: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
    /// The text of its `Config file: …` line; `None` when it stops before logging one.
    config: Option<&'static str>,
    /// The names in its `Included configuration file …` lines.
    included: &'static [&'static str],
    /// The paths of its `Listening for IPC requests on address unix:…` lines, in order.
    binds: &'static [&'static str],
    /// The error it stops at, if it does.
    stops: Option<Stop>,
}

#[derive(Clone, Copy)]
struct Stop {
    /// What the node prints on stderr.
    error: &'static str,
    /// What `plan()` says about it: part of its error, or of a note when it plans anyway
    /// (files it cannot read are notes: the program reports them itself).
    plan: &'static str,
}

/// A row where the node runs and listens on `binds`.
const fn listens(
    what: &'static str,
    args: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
    config: Option<&'static str>,
    binds: &'static [&'static str],
) -> Row {
    Row {
        what,
        args,
        files,
        config,
        included: &[],
        binds,
        stops: None,
    }
}

/// A row where the node stops with `error` before logging its config file.
const fn stops(
    what: &'static str,
    args: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
    error: &'static str,
    plan: &'static str,
) -> Row {
    Row {
        what,
        args,
        files,
        config: None,
        included: &[],
        binds: &[],
        stops: Some(Stop { error, plan }),
    }
}

impl Row {
    const fn including(mut self, included: &'static [&'static str]) -> Row {
        self.included = included;
        self
    }

    /// It stops only after logging `config` and listening on `binds`.
    const fn after(mut self, config: Option<&'static str>, binds: &'static [&'static str]) -> Row {
        self.config = config;
        self.binds = binds;
        self
    }
}

const INCLUDES_ORDER: &[(&str, &str)] = &[
    (
        "{D}/bitcoin.conf",
        "ipcbind=unix:top.sock\nincludeconf=top.conf\n[regtest]\nincludeconf=rt.conf\nipcbind=unix:rtmain.sock\n",
    ),
    (
        "{D}/top.conf",
        "ipcbind=unix:top-inc.sock\n[regtest]\nipcbind=unix:top-inc-rt.sock\n",
    ),
    (
        "{D}/rt.conf",
        "ipcbind=unix:rt-inc.sock\n[regtest]\nipcbind=unix:rt-inc-rt.sock\n",
    ),
];

const SECTIONS: &[(&str, &str)] = &[(
    "{D}/bitcoin.conf",
    "regtest=1\nipcbind=unix:top.sock\nmain.ipcbind=unix:main-only.sock\nregtest.ipcbind=unix:prefixed.sock\n[regtest]\nipcbind=unix:section.sock\n[main]\nipcbind=unix:main-section.sock\n",
)];

const RT: &[&str] = &["-regtest", "-datadir={D}"];

/// The table. Every expectation is what the real node did (see the module docs).
const NODE_ROWS: &[Row] = &[
    // -ipcbind: values, repeats, negation.
    listens(
        "the default socket",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[],
        NO_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "several binds: relative to the network datadir, absolute, unix:, with ..",
        &[
            "-regtest",
            "-datadir={D}",
            "-ipcbind=unix:rel/x.sock",
            "-ipcbind=unix:{W}/abs.sock",
            "-ipcbind=unix:",
            "-ipcbind=unix:../up.sock",
        ],
        &[],
        NO_CONF,
        &[
            "{D}/regtest/rel/x.sock",
            "{W}/abs.sock",
            "{D}/regtest/node.sock",
            "{D}/regtest/../up.sock",
        ],
    ),
    listens(
        "the same socket twice: both bound (the second replaces the first)",
        &[
            "-regtest",
            "-datadir={D}",
            "-ipcbind=unix",
            "--ipcbind=unix",
        ],
        &[],
        NO_CONF,
        &["{D}/regtest/node.sock", "{D}/regtest/node.sock"],
    ),
    listens(
        "-noipcbind",
        &["-regtest", "-datadir={D}", "-noipcbind"],
        &[],
        NO_CONF,
        &[],
    ),
    listens(
        "-noipcbind=1",
        &["-regtest", "-datadir={D}", "-noipcbind=1"],
        &[],
        NO_CONF,
        &[],
    ),
    listens(
        "a final -noipcbind discards what came before",
        &["-regtest", "-datadir={D}", "-ipcbind=unix", "-noipcbind"],
        &[],
        NO_CONF,
        &[],
    ),
    listens(
        "-noipcbind in the middle",
        &[
            "-regtest",
            "-datadir={D}",
            "-ipcbind=unix:a",
            "-noipcbind",
            "-ipcbind=unix:b",
        ],
        &[],
        NO_CONF,
        &["{D}/regtest/b"],
    ),
    stops(
        "-noipcbind=0 (a double negative) is the address '1'",
        &["-regtest", "-datadir={D}", "-noipcbind=0"],
        &[],
        "Error: Unable to bind to IPC address '1'. Unrecognized address '1'",
        "Unrecognized address '1'",
    )
    .after(NO_CONF, &[]),
    stops(
        "-ipcbind=0 is the address '0', not a negation",
        &["-regtest", "-datadir={D}", "-ipcbind=0"],
        &[],
        "Error: Unable to bind to IPC address '0'. Unrecognized address '0'",
        "Unrecognized address '0'",
    )
    .after(NO_CONF, &[]),
    stops(
        "a bare -ipcbind is the empty address",
        &["-regtest", "-datadir={D}", "-ipcbind"],
        &[],
        "Error: Unable to bind to IPC address ''. Unrecognized address ''",
        "Unrecognized address ''",
    )
    .after(NO_CONF, &[]),
    stops(
        "an unrecognized address after a good one: the first is bound",
        &[
            "-regtest",
            "-datadir={D}",
            "-ipcbind=unix",
            "-ipcbind=tcp:1",
        ],
        &[],
        "Error: Unable to bind to IPC address 'tcp:1'. Unrecognized address 'tcp:1'",
        "Unrecognized address 'tcp:1'",
    )
    .after(NO_CONF, &["{D}/regtest/node.sock"]),
    listens(
        "a socket path of 107 bytes fits",
        &["-regtest", "-datadir={D}", "-ipcbind=unix:{LEN107}"],
        &[],
        NO_CONF,
        &["{LEN107}"],
    ),
    stops(
        "a socket path of 108 bytes does not",
        &["-regtest", "-datadir={D}", "-ipcbind=unix:{LEN108}"],
        &[],
        "Unix address path \"{LEN108}\" exceeded maximum socket path length",
        "exceeded maximum socket path length",
    )
    .after(NO_CONF, &[]),
    // -conf.
    stops(
        "-conf=0 is a file named 0",
        &["-regtest", "-datadir={D}", "-conf=0", "-ipcbind=unix"],
        &[],
        "Error: Error reading configuration file: specified config file \"{D}/0\" could not be opened.",
        "-conf: cannot read {D}/0:",
    ),
    listens(
        "-noconf: no config file, even if there is one",
        &["-regtest", "-datadir={D}", "-noconf", "-ipcbind=unix"],
        &[("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n")],
        Some("<disabled>"),
        &["{D}/regtest/node.sock"],
    ),
    stops(
        "-conf= names the default file, which must then exist",
        &["-regtest", "-datadir={D}", "-conf=", "-ipcbind=unix"],
        &[],
        "specified config file \"{D}/bitcoin.conf\" could not be opened.",
        "-conf: cannot read {D}/bitcoin.conf:",
    ),
    listens(
        "-conf= with the default file there",
        &["-regtest", "-datadir={D}", "-conf="],
        &[("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n")],
        D_CONF,
        &["{D}/regtest/c.sock"],
    ),
    listens(
        "-noconf=0 is a file named 1",
        &["-regtest", "-datadir={D}", "-noconf=0"],
        &[("{D}/1", "ipcbind=unix:c.sock\n")],
        Some("{D}/1"),
        &["{D}/regtest/c.sock"],
    ),
    stops(
        "a relative -conf is relative to the datadir, not the working directory",
        &["-regtest", "-datadir={D}", "-conf=my.conf"],
        &[("{W}/my.conf", "ipcbind=unix:c.sock\n")],
        "specified config file \"{D}/my.conf\" could not be opened.",
        "-conf: cannot read {D}/my.conf:",
    ),
    listens(
        "an absolute -conf",
        &["-regtest", "-datadir={D}", "-conf={W}/my.conf"],
        &[("{W}/my.conf", "ipcbind=unix:c.sock\n")],
        Some("{W}/my.conf"),
        &["{D}/regtest/c.sock"],
    ),
    stops(
        "-conf naming a directory",
        &["-regtest", "-datadir={D}", "-conf=cd", "-ipcbind=unix"],
        &[("{D}/cd/", "")],
        "Error reading configuration file: Config file \"{D}/cd\" is a directory.",
        "-conf: {D}/cd is a directory",
    ),
    stops(
        "-conf elsewhere while the datadir has a bitcoin.conf",
        &["-regtest", "-datadir={D}", "-conf={W}/x.conf"],
        &[
            ("{D}/bitcoin.conf", "ipcbind=unix:d.sock\n"),
            ("{W}/x.conf", "ipcbind=unix:x.sock\n"),
        ],
        "Data directory \"{D}\" contains a \"bitcoin.conf\" file which is ignored, because a different configuration file \"{W}/x.conf\" from command line argument \"-conf={W}/x.conf\" is being used instead.",
        "the data directory {D} contains a bitcoin.conf file which is ignored, because {W}/x.conf is being used instead",
    ),
    listens(
        "the same with -allowignoredconf",
        &[
            "-regtest",
            "-datadir={D}",
            "-conf={W}/x.conf",
            "-allowignoredconf",
        ],
        &[
            ("{D}/bitcoin.conf", "ipcbind=unix:d.sock\n"),
            ("{W}/x.conf", "ipcbind=unix:x.sock\n"),
        ],
        Some("{W}/x.conf"),
        &["{D}/regtest/x.sock"],
    ),
    listens(
        "-conf=bitcoin.conf is the datadir's own: no conflict",
        &["-regtest", "-datadir={D}", "-conf=bitcoin.conf"],
        &[("{D}/bitcoin.conf", "ipcbind=unix:d.sock\n")],
        D_CONF,
        &["{D}/regtest/d.sock"],
    ),
    // The config file's syntax.
    stops(
        "an option with a leading - in the config",
        RT,
        &[("{D}/bitcoin.conf", "regtest=1\n-ipcbind=unix\n")],
        "Error reading configuration file: parse error on line 2: -ipcbind=unix, options in configuration file must be specified without leading -",
        "parse error on line 2: -ipcbind=unix",
    ),
    stops(
        "a negation without a value in the config",
        RT,
        &[("{D}/bitcoin.conf", "noipcbind\n")],
        "parse error on line 1: noipcbind, if you intended to specify a negated option, use noipcbind=1 instead",
        "use noipcbind=1 instead",
    ),
    stops(
        "conf= in the config",
        RT,
        &[("{D}/bitcoin.conf", "conf=x.conf\n")],
        "Error reading configuration file: conf cannot be set in the configuration file; use includeconf= if you want to include additional config files",
        "conf cannot be set in the configuration file",
    ),
    listens(
        "comments, blanks, spaces around keys, values and sections",
        RT,
        &[(
            "{D}/bitcoin.conf",
            "# comment\nipcbind = unix:a#b.sock\n  [regtest]  \n\tipcbind=unix:t.sock \r\n",
        )],
        D_CONF,
        &["{D}/regtest/t.sock", "{D}/regtest/a"],
    ),
    // Sections and chains.
    listens(
        "chain from the config; its section and prefix first, then the top level",
        &["-datadir={D}"],
        SECTIONS,
        D_CONF,
        &[
            "{D}/regtest/prefixed.sock",
            "{D}/regtest/section.sock",
            "{D}/regtest/top.sock",
        ],
    ),
    listens(
        "-regtest=0 -chain=main on the command line over regtest=1 in the config",
        &["-datadir={D}", "-regtest=0", "-chain=main"],
        SECTIONS,
        D_CONF,
        &[
            "{D}/main-only.sock",
            "{D}/main-section.sock",
            "{D}/top.sock",
        ],
    ),
    listens(
        "a section's negation leaves nothing for the top level",
        RT,
        &[(
            "{D}/bitcoin.conf",
            "ipcbind=unix:c.sock\n[regtest]\nnoipcbind=1\n",
        )],
        D_CONF,
        &[],
    ),
    stops(
        "two chains on the command line",
        &["-regtest", "-testnet", "-datadir={D}", "-ipcbind=unix"],
        &[],
        "Error: Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain. Can use at most one.",
        "Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain. Can use at most one.",
    ),
    stops(
        "a chain in the config and another on the command line",
        &["-testnet", "-datadir={D}", "-ipcbind=unix"],
        &[("{D}/bitcoin.conf", "chain=regtest\n")],
        "Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain.",
        "Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain.",
    ),
    stops(
        "-nochain is the chain '0', which conflicts",
        &["-nochain", "-regtest", "-datadir={D}"],
        &[],
        "Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain.",
        "Invalid combination",
    ),
    stops(
        "an unknown chain",
        &["-chain=bogus", "-datadir={D}", "-ipcbind=unix"],
        &[],
        "Error: Unknown chain bogus.",
        "unknown chain 'bogus'",
    ),
    listens(
        "-regtest=0 on the command line over regtest=1 in the config",
        &["-regtest=0", "-signet", "-datadir={D}", "-ipcbind=unix"],
        &[("{D}/bitcoin.conf", "regtest=1\n")],
        D_CONF,
        &["{D}/signet/node.sock"],
    ),
    listens(
        "chain flags in the config: the last one wins",
        &["-datadir={D}", "-ipcbind=unix"],
        &[("{D}/bitcoin.conf", "regtest=1\nregtest=0\n")],
        D_CONF,
        &["{D}/node.sock"],
    ),
    listens(
        "chain= in the config: the first one wins",
        &["-datadir={D}", "-ipcbind=unix"],
        &[("{D}/bitcoin.conf", "chain=regtest\nchain=signet\n")],
        D_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "a chain flag inside a section does not select the chain",
        &["-datadir={D}", "-ipcbind=unix"],
        &[("{D}/bitcoin.conf", "[regtest]\nregtest=1\n")],
        D_CONF,
        &["{D}/node.sock"],
    ),
    listens(
        "testnet4's subdirectory",
        &["-testnet4", "-datadir={D}", "-ipcbind=unix"],
        &[],
        NO_CONF,
        &["{D}/testnet4/node.sock"],
    ),
    // -datadir and datadir=.
    listens(
        "a relative -datadir is relative to the working directory",
        &["-regtest", "-datadir=d", "-ipcbind=unix"],
        &[],
        NO_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "-datadir with . components and a trailing slash",
        &["-regtest", "-datadir=./d/.", "-ipcbind=unix"],
        &[],
        NO_CONF,
        &["{D}/regtest/node.sock"],
    ),
    stops(
        "a missing -datadir",
        &["-regtest", "-datadir=nope", "-ipcbind=unix"],
        &[],
        "Error: Specified data directory \"nope\" does not exist.",
        "-datadir: directory {W}/nope does not exist",
    ),
    listens(
        "-datadir: the last one wins",
        &[
            "-regtest",
            "-datadir={W}/nope",
            "-datadir={D}",
            "-ipcbind=unix",
        ],
        &[],
        NO_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "an empty -datadir is the default",
        &["-regtest", "-datadir={D}", "-datadir=", "-ipcbind=unix"],
        &[],
        Some("{H}/bitcoin.conf (not found, skipping)"),
        &["{H}/regtest/node.sock"],
    ),
    stops(
        "-nodatadir",
        &["-regtest", "-nodatadir", "-ipcbind=unix"],
        &[],
        "Error: Error parsing command line arguments: Negating of -datadir is meaningless and therefore forbidden",
        "Negating of -datadir is meaningless and therefore forbidden",
    ),
    listens(
        "datadir= in the config moves the datadir; includes stay relative to the first one",
        &["-regtest"],
        &[
            ("{W}/e/", ""),
            (
                "{H}/bitcoin.conf",
                "datadir={W}/e\nincludeconf=inc.conf\nipcbind=unix\n",
            ),
            ("{H}/inc.conf", "ipcbind=unix:h-inc.sock\n"),
            ("{W}/e/inc.conf", "ipcbind=unix:e-inc.sock\n"),
        ],
        H_CONF,
        &["{W}/e/regtest/node.sock", "{W}/e/regtest/h-inc.sock"],
    )
    .including(&["inc.conf"]),
    listens(
        "a relative datadir= in the config is relative to the working directory",
        &["-regtest"],
        &[
            ("{W}/e/", ""),
            (
                "{H}/bitcoin.conf",
                "datadir=e\n[regtest]\nipcbind=unix:s/x.sock\n",
            ),
        ],
        H_CONF,
        &["{W}/e/regtest/s/x.sock"],
    ),
    listens(
        "datadir= in the config: the first one wins",
        &["-regtest"],
        &[
            ("{W}/e/", ""),
            ("{W}/f/", ""),
            (
                "{H}/bitcoin.conf",
                "datadir={W}/e\ndatadir={W}/f\nipcbind=unix\n",
            ),
        ],
        H_CONF,
        &["{W}/e/regtest/node.sock"],
    ),
    listens(
        "the chain's datadir= over the top level's",
        &["-regtest"],
        &[
            ("{W}/e/", ""),
            ("{W}/f/", ""),
            (
                "{H}/bitcoin.conf",
                "datadir={W}/e\n[regtest]\ndatadir={W}/f\nipcbind=unix\n",
            ),
        ],
        H_CONF,
        &["{W}/f/regtest/node.sock"],
    ),
    stops(
        "a missing datadir= in the config",
        &["-regtest"],
        &[("{H}/bitcoin.conf", "datadir={W}/nope\nipcbind=unix\n")],
        "Error: Error reading configuration file: specified data directory \"{W}/nope\" does not exist.",
        "-datadir: directory {W}/nope does not exist",
    ),
    stops(
        "a missing top-level datadir= counts even when the chain's section has one",
        &["-regtest"],
        &[
            ("{W}/e/", ""),
            (
                "{H}/bitcoin.conf",
                "datadir={W}/nope\n[regtest]\ndatadir={W}/e\nipcbind=unix\n",
            ),
        ],
        "specified data directory \"{W}/nope\" does not exist.",
        "-datadir: directory {W}/nope does not exist",
    ),
    stops(
        "a missing datadir= in the chain's section: the node aborts",
        &["-regtest"],
        &[(
            "{H}/bitcoin.conf",
            "[regtest]\ndatadir={W}/nope\nipcbind=unix\n",
        )],
        "Assertion `base.is_absolute()' failed.",
        "-datadir: directory {W}/nope does not exist",
    ),
    stops(
        "datadir= naming a directory with its own bitcoin.conf",
        &["-regtest"],
        &[
            ("{W}/e/bitcoin.conf", "ipcbind=unix:e.sock\n"),
            ("{H}/bitcoin.conf", "datadir={W}/e\nipcbind=unix\n"),
        ],
        "Data directory \"{W}/e\" contains a \"bitcoin.conf\" file which is ignored, because a different configuration file \"{H}/bitcoin.conf\" from data directory \"{H}\" is being used instead.",
        "the data directory {W}/e contains a bitcoin.conf file which is ignored",
    ),
    listens(
        "the same with allowignoredconf=1 in the config",
        &["-regtest"],
        &[
            ("{W}/e/bitcoin.conf", "ipcbind=unix:e.sock\n"),
            (
                "{H}/bitcoin.conf",
                "allowignoredconf=1\ndatadir={W}/e\nipcbind=unix\n",
            ),
        ],
        H_CONF,
        &["{W}/e/regtest/node.sock"],
    ),
    // includeconf.
    stops(
        "-includeconf on the command line",
        &["-regtest", "-datadir={D}", "-includeconf=x.conf"],
        &[],
        "Error: Error parsing command line arguments: -includeconf cannot be used from commandline; -includeconf=\"x.conf\"",
        "-includeconf cannot be used from commandline; -includeconf=\"x.conf\"",
    ),
    stops(
        "-noincludeconf=0 on the command line (a double negative)",
        &["-regtest", "-datadir={D}", "-noincludeconf=0"],
        &[],
        "-includeconf cannot be used from commandline; -includeconf=true",
        "-includeconf cannot be used from commandline; -includeconf=true",
    ),
    stops(
        "-includeconf after -noincludeconf",
        &[
            "-regtest",
            "-datadir={D}",
            "-noincludeconf",
            "-includeconf=x",
        ],
        &[],
        "-includeconf cannot be used from commandline; -includeconf=\"x\"",
        "-includeconf=\"x\"",
    ),
    listens(
        "-noincludeconf: the config's includeconf= is not followed",
        &[
            "-regtest",
            "-datadir={D}",
            "-noincludeconf",
            "-ipcbind=unix",
        ],
        &[
            ("{D}/bitcoin.conf", "includeconf=inc.conf\n"),
            ("{D}/inc.conf", "ipcbind=unix:inc.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "-includeconf=x -noincludeconf: allowed, and no includes",
        &[
            "-regtest",
            "-datadir={D}",
            "-includeconf=x",
            "-noincludeconf",
            "-ipcbind=unix",
        ],
        &[
            ("{D}/bitcoin.conf", "includeconf=inc.conf\n"),
            ("{D}/inc.conf", "ipcbind=unix:inc.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "includes: the chain section's first, each file's values after the config's own",
        RT,
        INCLUDES_ORDER,
        D_CONF,
        &[
            "{D}/regtest/rtmain.sock",
            "{D}/regtest/rt-inc-rt.sock",
            "{D}/regtest/top-inc-rt.sock",
            "{D}/regtest/top.sock",
            "{D}/regtest/rt-inc.sock",
            "{D}/regtest/top-inc.sock",
        ],
    )
    .including(&["rt.conf", "top.conf"]),
    listens(
        "includeconf= in another chain's section is not followed",
        RT,
        &[
            ("{D}/bitcoin.conf", "[main]\nincludeconf=m.conf\n"),
            ("{D}/m.conf", "ipcbind=unix:m.sock\n"),
        ],
        D_CONF,
        &[],
    ),
    listens(
        "regtest.includeconf= is the chain's",
        RT,
        &[
            ("{D}/bitcoin.conf", "regtest.includeconf=r.conf\n"),
            ("{D}/r.conf", "ipcbind=unix:r.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/r.sock"],
    )
    .including(&["r.conf"]),
    listens(
        "an included file cannot include",
        RT,
        &[
            ("{D}/bitcoin.conf", "includeconf=a.conf\n"),
            ("{D}/a.conf", "includeconf=b.conf\nipcbind=unix:a.sock\n"),
            ("{D}/b.conf", "ipcbind=unix:b.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/a.sock"],
    )
    .including(&["a.conf"]),
    listens(
        "an included file may pick the chain (but not the sections included before)",
        &["-datadir={D}"],
        &[
            (
                "{D}/bitcoin.conf",
                "includeconf=inc.conf\n[regtest]\nincludeconf=rt.conf\n",
            ),
            ("{D}/inc.conf", "regtest=1\nipcbind=unix:inc.sock\n"),
            ("{D}/rt.conf", "ipcbind=unix:rt.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/inc.sock"],
    )
    .including(&["inc.conf"]),
    listens(
        "chain= in the config picks the section whose includes count",
        &["-datadir={D}"],
        &[
            (
                "{D}/bitcoin.conf",
                "chain=regtest\n[regtest]\nincludeconf=r.conf\n",
            ),
            ("{D}/r.conf", "ipcbind=unix:r.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/r.sock"],
    )
    .including(&["r.conf"]),
    listens(
        "noincludeconf=1 in the config drops the includes before it",
        RT,
        &[
            (
                "{D}/bitcoin.conf",
                "includeconf=a.conf\nnoincludeconf=1\nincludeconf=b.conf\n",
            ),
            ("{D}/a.conf", "ipcbind=unix:a.sock\n"),
            ("{D}/b.conf", "ipcbind=unix:b.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/b.sock"],
    )
    .including(&["b.conf"]),
    listens(
        "a relative include is relative to the datadir, not to -conf's directory",
        &["-regtest", "-datadir={D}", "-conf={W}/c/x.conf"],
        &[
            ("{W}/c/x.conf", "includeconf=inc.conf\n"),
            ("{D}/inc.conf", "ipcbind=unix:d-inc.sock\n"),
            ("{W}/c/inc.conf", "ipcbind=unix:c-inc.sock\n"),
        ],
        Some("{W}/c/x.conf"),
        &["{D}/regtest/d-inc.sock"],
    )
    .including(&["inc.conf"]),
    listens(
        "an absolute include",
        RT,
        &[
            ("{D}/bitcoin.conf", "includeconf={W}/abs.conf\n"),
            ("{W}/abs.conf", "ipcbind=unix:abs.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/abs.sock"],
    )
    .including(&["{W}/abs.conf"]),
    listens(
        "an included file may move the datadir",
        &["-regtest"],
        &[
            ("{W}/e/", ""),
            ("{H}/bitcoin.conf", "includeconf=i.conf\n"),
            ("{H}/i.conf", "datadir={W}/e\nipcbind=unix\n"),
        ],
        H_CONF,
        &["{W}/e/regtest/node.sock"],
    )
    .including(&["i.conf"]),
    stops(
        "a missing include",
        RT,
        &[(
            "{D}/bitcoin.conf",
            "includeconf=inc.conf\nipcbind=unix:main.sock\n",
        )],
        "Error: Error reading configuration file: Failed to include configuration file inc.conf",
        "includeconf: cannot read \"inc.conf\"",
    ),
    stops(
        "an empty includeconf=",
        RT,
        &[("{D}/bitcoin.conf", "includeconf=\n")],
        "Error reading configuration file: Failed to include configuration file ",
        "includeconf: cannot read \"\"",
    ),
    stops(
        "an include naming a directory",
        RT,
        &[
            ("{D}/idir/", ""),
            ("{D}/bitcoin.conf", "includeconf=idir\n"),
        ],
        "Error reading configuration file: Included config file \"{D}/idir\" is a directory.",
        "includeconf: {D}/idir is a directory",
    ),
    stops(
        "a parse error in an included file",
        RT,
        &[
            ("{D}/bitcoin.conf", "includeconf=i.conf\n"),
            ("{D}/i.conf", "bogus line\n"),
        ],
        "Error reading configuration file: parse error on line 1: bogus line",
        "{D}/i.conf: parse error on line 1: bogus line",
    ),
    stops(
        "conf= in an included file",
        RT,
        &[
            ("{D}/bitcoin.conf", "includeconf=i.conf\n"),
            ("{D}/i.conf", "conf=x.conf\n"),
        ],
        "conf cannot be set in the configuration file",
        "conf cannot be set in the configuration file",
    ),
    // Command line and config together: single options vs. the list -ipcbind.
    listens(
        "list values: the command line's, then the config's",
        &["-regtest", "-datadir={D}", "-ipcbind=unix:a.sock"],
        &[("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n")],
        D_CONF,
        &["{D}/regtest/a.sock", "{D}/regtest/c.sock"],
    ),
    listens(
        "a command-line -noipcbind drops the config's too",
        &["-regtest", "-datadir={D}", "-noipcbind"],
        &[("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n")],
        D_CONF,
        &[],
    ),
    listens(
        "a command-line negation followed by a value keeps the config's",
        &[
            "-regtest",
            "-datadir={D}",
            "-noipcbind",
            "-ipcbind=unix:a.sock",
        ],
        &[("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n")],
        D_CONF,
        &["{D}/regtest/a.sock", "{D}/regtest/c.sock"],
    ),
    listens(
        "a negation in the config drops only the config's",
        &["-regtest", "-datadir={D}", "-ipcbind=unix:a.sock"],
        &[("{D}/bitcoin.conf", "ipcbind=unix:c.sock\nnoipcbind=1\n")],
        D_CONF,
        &["{D}/regtest/a.sock"],
    ),
    stops(
        "ipcbind=0 in the config",
        RT,
        &[("{D}/bitcoin.conf", "ipcbind=0\n")],
        "Unable to bind to IPC address '0'. Unrecognized address '0'",
        "Unrecognized address '0'",
    )
    .after(D_CONF, &[]),
    stops(
        "noipcbind=0 in the config",
        RT,
        &[("{D}/bitcoin.conf", "noipcbind=0\n")],
        "Unable to bind to IPC address '1'. Unrecognized address '1'",
        "Unrecognized address '1'",
    )
    .after(D_CONF, &[]),
    // The settings file (settings.json in the network datadir).
    listens(
        "settings.json's ipcbind comes after the command line's",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[(
            "{D}/regtest/settings.json",
            "{\"ipcbind\": \"unix:s.sock\"}",
        )],
        NO_CONF,
        &["{D}/regtest/node.sock", "{D}/regtest/s.sock"],
    ),
    listens(
        "a list in settings.json, before the config's",
        RT,
        &[
            (
                "{D}/regtest/settings.json",
                "{\"ipcbind\": [\"unix:a.sock\", \"unix:b.sock\"]}",
            ),
            ("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n"),
        ],
        D_CONF,
        &[
            "{D}/regtest/a.sock",
            "{D}/regtest/b.sock",
            "{D}/regtest/c.sock",
        ],
    ),
    listens(
        "false in settings.json is a negation: the config's are dropped",
        RT,
        &[
            ("{D}/regtest/settings.json", "{\"ipcbind\": false}"),
            ("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n"),
        ],
        D_CONF,
        &[],
    ),
    listens(
        "false in settings.json after command-line values keeps the config's",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[
            ("{D}/regtest/settings.json", "{\"ipcbind\": false}"),
            ("{D}/bitcoin.conf", "ipcbind=unix:c.sock\n"),
        ],
        D_CONF,
        &["{D}/regtest/node.sock", "{D}/regtest/c.sock"],
    ),
    stops(
        "false inside a settings.json list is the address '0'",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[(
            "{D}/regtest/settings.json",
            "{\"ipcbind\": [\"unix:a.sock\", false, \"unix:b.sock\"]}",
        )],
        "Unable to bind to IPC address '0'. Unrecognized address '0'",
        "Unrecognized address '0'",
    )
    .after(NO_CONF, &["{D}/regtest/node.sock", "{D}/regtest/a.sock"]),
    stops(
        "a number in settings.json",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[("{D}/regtest/settings.json", "{\"ipcbind\": 5}")],
        "JSON value of type number is not of expected type string",
        "ipcbind holds a JSON number, not a string",
    )
    .after(NO_CONF, &[]),
    stops(
        "settings.json that is not JSON",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[("{D}/regtest/settings.json", "garbage")],
        "Settings file {D}/regtest/settings.json does not contain valid JSON.",
        "-settings: {D}/regtest/settings.json: does not contain valid JSON",
    ),
    stops(
        "settings.json that is not an object",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[("{D}/regtest/settings.json", "[]")],
        "Found non-object value [] in settings file {D}/regtest/settings.json",
        "found non-object value []",
    ),
    stops(
        "a duplicate key in settings.json",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[(
            "{D}/regtest/settings.json",
            "{\"ipcbind\": \"unix:a\", \"ipcbind\": \"unix:b\"}",
        )],
        "Found duplicate key ipcbind in settings file {D}/regtest/settings.json",
        "found duplicate key ipcbind",
    ),
    listens(
        "settings.json keys are plain names: no sections, no negations",
        &["-regtest", "-datadir={D}", "-ipcbind=unix"],
        &[(
            "{D}/regtest/settings.json",
            "{\"regtest.ipcbind\": \"unix:p.sock\", \"noipcbind\": true, \"-ipcbind\": \"unix:m.sock\"}",
        )],
        NO_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "-nosettings",
        &["-regtest", "-datadir={D}", "-nosettings", "-ipcbind=unix"],
        &[(
            "{D}/regtest/settings.json",
            "{\"ipcbind\": \"unix:s.sock\"}",
        )],
        NO_CONF,
        &["{D}/regtest/node.sock"],
    ),
    listens(
        "-settings is relative to the network datadir",
        &["-regtest", "-datadir={D}", "-settings=../x.json"],
        &[("{D}/x.json", "{\"ipcbind\": \"unix:s.sock\"}")],
        NO_CONF,
        &["{D}/regtest/s.sock"],
    ),
    listens(
        "-settings=0 is a file named 0",
        &["-regtest", "-datadir={D}", "-settings=0"],
        &[("{D}/regtest/0", "{\"ipcbind\": \"unix:s.sock\"}")],
        NO_CONF,
        &["{D}/regtest/s.sock"],
    ),
    listens(
        "settings= in the config",
        RT,
        &[
            ("{D}/bitcoin.conf", "settings={W}/x.json\n"),
            ("{W}/x.json", "{\"ipcbind\": \"unix:s.sock\"}"),
        ],
        D_CONF,
        &["{D}/regtest/s.sock"],
    ),
    // Other command-line errors.
    stops(
        "a positional argument",
        &["-regtest", "-datadir={D}", "-ipcbind=unix", "pos"],
        &[],
        "Error: Command line contains unexpected token 'pos', see bitcoind -h for a list of options.",
        "unexpected token 'pos'",
    ),
    stops(
        "a section prefix on the command line",
        &["-regtest", "-datadir={D}", "-regtest.ipcbind=unix"],
        &[],
        "Error: Error parsing command line arguments: Invalid parameter -regtest.ipcbind=unix",
        "Invalid parameter -regtest.ipcbind=unix",
    ),
];

/// A row's scratch directory and its placeholders.
struct Dirs {
    scratch: Scratch,
}

impl Dirs {
    fn new(files: &[(&str, &str)]) -> Dirs {
        let dirs = Dirs {
            scratch: Scratch::new("a"),
        };
        std::fs::create_dir_all(dirs.w().join("d")).unwrap();
        std::fs::create_dir_all(dirs.w().join("h/.bitcoin")).unwrap();
        for (name, text) in files {
            let path = PathBuf::from(dirs.expand(name));
            if name.ends_with('/') {
                std::fs::create_dir_all(&path).unwrap();
            } else {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, dirs.expand(text)).unwrap();
            }
        }
        dirs
    }

    fn w(&self) -> &Path {
        self.scratch.path()
    }

    fn home(&self) -> PathBuf {
        self.w().join("h")
    }

    fn expand(&self, s: &str) -> String {
        let w = self.w().display().to_string();
        let mut s = s.to_string();
        for n in [107, 108] {
            let tag = format!("{{LEN{n}}}");
            if s.contains(&tag) {
                let fill = n - w.len() - 1;
                s = s.replace(&tag, &format!("{w}/{}", "x".repeat(fill)));
            }
        }
        s.replace("{D}", &format!("{w}/d"))
            .replace("{H}", &format!("{w}/h/.bitcoin"))
            .replace("{W}", &w)
    }

    fn expand_all(&self, items: &[&str]) -> Vec<String> {
        items.iter().map(|s| self.expand(s)).collect()
    }

    /// The environment the program runs in, for `plan()`.
    fn env(&self) -> Env {
        Env {
            home: Some(self.home()),
            cwd: self.w().to_path_buf(),
            local_app_data: None,
            app_data: None,
        }
    }

    /// A command for `program` in this row's environment.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(self.w())
            .env("HOME", self.home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

/// Runs `rows` on a few threads (each row is a separate program run, mostly waiting) and
/// panics with every row's problems at once.
fn run_table<T: Sync>(rows: &[T], check: impl Fn(&T) -> Vec<String> + Sync) {
    let next = AtomicUsize::new(0);
    let problems = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(row) = rows.get(i) else { break };
                    let p = check(row);
                    problems.lock().unwrap().extend(p);
                }
            });
        }
    });
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// `plan()` against the row.
fn check_node_plan(row: &Row, dirs: &Dirs, argv: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(format!("{}: plan: {p}", row.what));
    match (
        row.stops,
        bitcoin::plan("bitcoin-node", argv, &dirs.env(), false),
    ) {
        (None, Ok(p)) => {
            let binds: Vec<String> = p
                .binds
                .iter()
                .map(|b| b.path.display().to_string())
                .collect();
            if binds != dirs.expand_all(row.binds) {
                problem(format!(
                    "binds {binds:?}, the node's {:?}",
                    dirs.expand_all(row.binds)
                ));
            }
            let config = row.config.map(|c| dirs.expand(c));
            if p.config.log_text() != config {
                problem(format!(
                    "config {:?}, the node's {config:?}",
                    p.config.log_text()
                ));
            }
            let included = dirs.expand_all(row.included);
            if p.included.len() != included.len()
                || !p
                    .included
                    .iter()
                    .zip(&included)
                    .all(|(p, n)| p.ends_with(n))
            {
                problem(format!(
                    "included {:?}, the node's {included:?}",
                    p.included
                ));
            }
            if !p.notes.is_empty() {
                problem(format!("notes {:?}", p.notes));
            }
        }
        (None, Err(e)) => problem(format!("refused ({e}), but the node runs")),
        (Some(stop), Err(e)) => {
            let want = dirs.expand(stop.plan);
            if !e.to_string().contains(&want) {
                problem(format!("refused with {e:?}; expected it to say {want:?}"));
            }
        }
        (Some(stop), Ok(p)) => {
            let want = dirs.expand(stop.plan);
            if !p.notes.iter().any(|n| n.contains(&want)) {
                problem(format!(
                    "planned {:?} with notes {:?}; the node stops, and the plan should say {want:?}",
                    p.binds, p.notes
                ));
            }
        }
    }
    problems
}

/// What a real node printed.
struct Seen {
    config: Option<String>,
    included: Vec<String>,
    binds: Vec<String>,
    /// How it ended when it stopped by itself (`None`: it ran on and was stopped).
    exited: Option<ExitStatus>,
    /// The line that showed it ran on past its IPC binds.
    ran_on_at: String,
    stderr: String,
}

/// Runs the node until its IPC lines are out (or it exits), then stops it.
fn run_node(node: &Path, dirs: &Dirs, argv: &[String]) -> Seen {
    let mut child = KillOnDrop(Some(dirs.command(node).args(argv).spawn().unwrap()));
    let stdout = child.child().stdout.take().unwrap();
    let mut stderr = child.child().stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Keeps draining after the lines are found, so the node never blocks on a full pipe.
    let out = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut seen = Seen {
        config: None,
        included: Vec::new(),
        binds: Vec::new(),
        exited: None,
        ran_on_at: String::new(),
        stderr: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut scheduler = false;
    let mut stopping = false;
    let ran_on = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(c) = line.strip_prefix("Config file: ") {
                    seen.config = Some(c.to_string());
                } else if let Some(n) = line.strip_prefix("Included configuration file ") {
                    seen.included.push(n.to_string());
                } else if let Some(p) =
                    line.strip_prefix("Listening for IPC requests on address unix:")
                {
                    seen.binds.push(p.to_string());
                } else if line == "scheduler thread start" {
                    scheduler = true;
                } else if line.starts_with("[error]")
                    || line.starts_with("EXCEPTION")
                    || line == "scheduler thread exit"
                    || line.starts_with("Shutdown")
                {
                    // It is stopping: read on until it has.
                    stopping = true;
                } else if line.starts_with("[warning]") || line.is_empty() || line.starts_with('*')
                {
                    // Neither way: a warning (an exception is logged as a multi-line warning
                    // with a banner before its EXCEPTION line).
                } else if scheduler && !stopping {
                    // The node binds its IPC addresses right after starting the scheduler:
                    // the first other line after that means they are all out.
                    seen.ran_on_at = line;
                    break true;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break false,
            Err(RecvTimeoutError::Timeout) => panic!("bitcoin-node {argv:?}: no IPC lines in 20 s"),
        }
    };
    let mut child = child.take();
    if ran_on {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let stop_by = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < stop_by {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    if !ran_on {
        seen.exited = Some(status);
    }
    let _ = out.join();
    seen.stderr = err.join().unwrap();
    seen
}

/// The real node against the row.
fn check_node_run(row: &Row, dirs: &Dirs, argv: &[String], node: &Path) -> Vec<String> {
    let seen = run_node(node, dirs, argv);
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(format!("{}: bitcoin-node: {p}", row.what));
    let config = row.config.map(|c| dirs.expand(c));
    if seen.config != config {
        problem(format!(
            "logged config {:?}, the table says {config:?}",
            seen.config
        ));
    }
    if seen.included != dirs.expand_all(row.included) {
        problem(format!(
            "included {:?}, the table says {:?}",
            seen.included, row.included
        ));
    }
    if seen.binds != dirs.expand_all(row.binds) {
        problem(format!(
            "listened on {:?}, the table says {:?}",
            seen.binds,
            dirs.expand_all(row.binds)
        ));
    }
    match (row.stops, seen.exited) {
        (None, None) => {}
        (None, Some(status)) => problem(format!("exited ({status}): {}", seen.stderr.trim())),
        (Some(_), None) => problem(format!(
            "ran on (logging {:?}), but the table says it stops",
            seen.ran_on_at
        )),
        (Some(stop), Some(status)) => {
            let want = dirs.expand(stop.error);
            if status.success() || !seen.stderr.contains(&want) {
                problem(format!(
                    "exited ({status}) with {:?}; the table says {want:?}",
                    seen.stderr.trim()
                ));
            }
        }
    }
    problems
}

/// Every row: the plan, and the real node when it is there.
#[test]
fn plan_matches_the_real_node() {
    let node = peer("bitcoin-node");
    run_table(NODE_ROWS, |row| {
        let dirs = Dirs::new(row.files);
        let argv: Vec<String> = NODE_EXTRA
            .iter()
            .map(|a| a.to_string())
            .chain(row.args.iter().map(|a| dirs.expand(a)))
            .collect();
        // Planned first: the node writes into the datadir.
        let mut problems = check_node_plan(row, &dirs, &argv);
        if let Some(node) = &node {
            problems.extend(check_node_run(row, &dirs, &argv, node));
        }
        problems
    });
}

/// One command line of bitcoin-cli and where the real cli connected.
struct CliRow {
    what: &'static str,
    args: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
    /// Sockets listening before the cli runs (`-ipcconnect=auto` only uses a socket that is
    /// there, and the plan looks too).
    listen: &'static [&'static str],
    /// The one it connects to; `None`: it does not use IPC (HTTP, or it stops).
    connects: Option<&'static str>,
    /// What it prints on stderr when it does not connect over IPC.
    stderr: &'static str,
    /// What `plan()` refuses with, if it does.
    plan_refuses: Option<&'static str>,
}

/// The HTTP fallback's error (the rows give `-rpcport=1`, where nothing listens).
const HTTP: &str = "Could not connect to the server";

const CLI_ROWS: &[CliRow] = &[
    CliRow {
        what: "-ipcconnect=unix",
        args: &["-regtest", "-datadir={D}", "-ipcconnect=unix"],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: Some("{D}/regtest/node.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "-ipcconnect=unix:relative",
        args: &["-regtest", "-datadir={D}", "-ipcconnect=unix:rel.sock"],
        files: &[],
        listen: &["{D}/regtest/node.sock", "{D}/regtest/rel.sock"],
        connects: Some("{D}/regtest/rel.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "auto, with the node's socket there",
        args: &["-regtest", "-datadir={D}"],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: Some("{D}/regtest/node.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "-noipcconnect",
        args: &["-regtest", "-datadir={D}", "-noipcconnect"],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: None,
        stderr: HTTP,
        plan_refuses: None,
    },
    CliRow {
        what: "-ipcconnect=0",
        args: &["-regtest", "-datadir={D}", "-ipcconnect=0"],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: None,
        stderr: HTTP,
        plan_refuses: None,
    },
    CliRow {
        what: "a bare -ipcconnect",
        args: &["-regtest", "-datadir={D}", "-ipcconnect"],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: None,
        stderr: HTTP,
        plan_refuses: None,
    },
    CliRow {
        what: "ipcconnect= in the config: the chain's section, the first value",
        args: &["-regtest", "-datadir={D}"],
        files: &[(
            "{D}/bitcoin.conf",
            "ipcconnect=unix:top.sock\n[regtest]\nipcconnect=unix:a.sock\nipcconnect=unix:b.sock\n",
        )],
        listen: &[
            "{D}/regtest/a.sock",
            "{D}/regtest/b.sock",
            "{D}/regtest/top.sock",
        ],
        connects: Some("{D}/regtest/a.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "the command line over the config",
        args: &["-regtest", "-datadir={D}", "-ipcconnect=unix:cmd.sock"],
        files: &[("{D}/bitcoin.conf", "[regtest]\nipcconnect=unix:a.sock\n")],
        listen: &["{D}/regtest/a.sock", "{D}/regtest/cmd.sock"],
        connects: Some("{D}/regtest/cmd.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "the cli does not follow includeconf=",
        args: &["-regtest", "-datadir={D}"],
        files: &[
            ("{D}/bitcoin.conf", "includeconf=inc.conf\n"),
            ("{D}/inc.conf", "[regtest]\nipcconnect=unix:inc.sock\n"),
        ],
        listen: &["{D}/regtest/inc.sock"],
        connects: None,
        stderr: HTTP,
        plan_refuses: None,
    },
    CliRow {
        what: "a missing include is no error for the cli",
        args: &["-regtest", "-datadir={D}", "-ipcconnect=unix"],
        files: &[("{D}/bitcoin.conf", "includeconf=inc.conf\n")],
        listen: &["{D}/regtest/node.sock"],
        connects: Some("{D}/regtest/node.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "the cli does not refuse a datadir with another bitcoin.conf",
        args: &["-regtest", "-datadir={D}", "-conf={W}/x.conf"],
        files: &[
            ("{D}/bitcoin.conf", "x=1\n"),
            ("{W}/x.conf", "[regtest]\nipcconnect=unix:x.sock\n"),
        ],
        listen: &["{D}/regtest/x.sock"],
        connects: Some("{D}/regtest/x.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "datadir= in the cli's config",
        args: &["-regtest"],
        files: &[
            ("{W}/e/", ""),
            (
                "{H}/bitcoin.conf",
                "datadir={W}/e\n[regtest]\nipcconnect=unix\n",
            ),
        ],
        listen: &["{W}/e/regtest/node.sock"],
        connects: Some("{W}/e/regtest/node.sock"),
        stderr: "",
        plan_refuses: None,
    },
    CliRow {
        what: "an unrecognized address",
        args: &["-regtest", "-datadir={D}", "-ipcconnect=tcp:1"],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: None,
        stderr: "error: Unrecognized address 'tcp:1'",
        plan_refuses: Some("Unrecognized address 'tcp:1'"),
    },
    CliRow {
        what: "-rpcconnect with -ipcconnect",
        args: &[
            "-regtest",
            "-datadir={D}",
            "-rpcconnect=127.0.0.1",
            "-ipcconnect=unix",
        ],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: None,
        stderr: "error: -rpcconnect and -ipcconnect options cannot both be enabled",
        plan_refuses: None,
    },
    CliRow {
        what: "-includeconf is no option of the cli's",
        args: &[
            "-regtest",
            "-datadir={D}",
            "-includeconf=x",
            "-ipcconnect=unix",
        ],
        files: &[],
        listen: &["{D}/regtest/node.sock"],
        connects: None,
        stderr: "Error parsing command line arguments: Invalid parameter -includeconf=x",
        plan_refuses: Some("Invalid parameter -includeconf=x"),
    },
];

/// Listens on the row's sockets, plans, runs the cli (when there), and compares.
fn check_cli(row: &CliRow, cli: Option<&Path>) -> Vec<String> {
    let dirs = Dirs::new(row.files);
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(format!("{}: {p}", row.what));
    let listeners: Vec<(String, UnixListener)> = row
        .listen
        .iter()
        .map(|p| {
            let p = dirs.expand(p);
            std::fs::create_dir_all(Path::new(&p).parent().unwrap()).unwrap();
            let l = UnixListener::bind(&p).unwrap();
            l.set_nonblocking(true).unwrap();
            (p, l)
        })
        .collect();
    // -rpcport=1: the HTTP fallback meets nothing (and no other test's node).
    let argv: Vec<String> = std::iter::once("-rpcport=1".to_string())
        .chain(row.args.iter().map(|a| dirs.expand(a)))
        .chain(std::iter::once("getblockcount".to_string()))
        .collect();
    let want = row.connects.map(|c| dirs.expand(c));
    match bitcoin::plan("bitcoin-cli", &argv, &dirs.env(), false) {
        Ok(p) => {
            let got = p.connect.map(|c| c.display().to_string());
            if row.plan_refuses.is_some() || got != want {
                problem(format!(
                    "plan: connect {got:?}; expected {want:?} (refusing: {:?})",
                    row.plan_refuses
                ));
            }
        }
        Err(e) => {
            if !row.plan_refuses.is_some_and(|w| e.to_string().contains(w)) {
                problem(format!(
                    "plan: refused ({e}); expected {:?}",
                    row.plan_refuses
                ));
            }
        }
    }
    let Some(cli) = cli else { return problems };
    let mut child = KillOnDrop(Some(dirs.command(cli).args(&argv).spawn().unwrap()));
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        for (path, l) in &listeners {
            // Accepted and dropped: the cli sees the connection close and gives up.
            if l.accept().is_ok() {
                accepted.push(path.clone());
            }
        }
        if let Some(status) = child.child().try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            problem("bitcoin-cli did not finish in 15 s".to_string());
            return problems;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // It has exited (try_wait reaped it); the guard's kill and wait on drop are no-ops.
    let mut stderr = String::new();
    let _ = child
        .child()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr);
    let expected: Vec<String> = want.clone().into_iter().collect();
    if accepted != expected {
        problem(format!(
            "bitcoin-cli connected to {accepted:?}, the table says {expected:?} ({status}, {})",
            stderr.trim()
        ));
    }
    if want.is_none() && !stderr.contains(row.stderr) {
        problem(format!(
            "bitcoin-cli said {:?}, the table says {:?}",
            stderr.trim(),
            row.stderr
        ));
    }
    problems
}

/// Every cli row: the plan, and the real cli when it is there.
#[test]
fn cli_connect_matches_the_real_cli() {
    let cli = peer("bitcoin-cli");
    run_table(CLI_ROWS, |row| check_cli(row, cli.as_deref()));
}

/// One command line of the `bitcoin` wrapper and what it ran.
struct WrapperRow {
    what: &'static str,
    args: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
    /// What it runs; `None`: it stops itself with `stderr`.
    runs: Option<&'static str>,
    stderr: &'static str,
}

const fn wrapper(
    what: &'static str,
    args: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
    runs: &'static str,
) -> WrapperRow {
    WrapperRow {
        what,
        args,
        files,
        runs: Some(runs),
        stderr: "",
    }
}

const REGTEST_BIND: &[(&str, &str)] = &[("{D}/bitcoin.conf", "[regtest]\nipcbind=unix\n")];

const WRAPPER_ROWS: &[WrapperRow] = &[
    wrapper("no ipc option", &["node"], &[], "bitcoind"),
    wrapper("-m", &["-m", "node"], &[], "bitcoin-node"),
    wrapper(
        "-ipcbind among the node's options",
        &["node", "-ipcbind=unix"],
        &[],
        "bitcoin-node",
    ),
    wrapper(
        "-noipcbind counts as given",
        &["node", "-noipcbind"],
        &[],
        "bitcoin-node",
    ),
    wrapper("-ipcfd", &["node", "-ipcfd=3"], &[], "bitcoin-node"),
    wrapper(
        "-M over -ipcbind",
        &["-M", "node", "-ipcbind=unix"],
        &[],
        "bitcoind",
    ),
    wrapper(
        "-ipcbind after a positional argument",
        &["node", "x", "-ipcbind=unix"],
        &[],
        "bitcoind",
    ),
    wrapper(
        "ipcbind in the config's chain section",
        &["node", "-regtest", "-datadir={D}"],
        REGTEST_BIND,
        "bitcoin-node",
    ),
    wrapper(
        "... only on that chain",
        &["node", "-datadir={D}"],
        REGTEST_BIND,
        "bitcoind",
    ),
    wrapper(
        "-noconf",
        &["node", "-regtest", "-datadir={D}", "-noconf"],
        REGTEST_BIND,
        "bitcoind",
    ),
    wrapper(
        "ipcbind in an included file",
        &["node", "-regtest", "-datadir={D}"],
        &[
            ("{D}/bitcoin.conf", "includeconf=i.conf\n"),
            ("{D}/i.conf", "[regtest]\nipcbind=unix\n"),
        ],
        "bitcoin-node",
    ),
    wrapper(
        "a missing include: what came before it counts",
        &["node", "-datadir={D}"],
        &[("{D}/bitcoin.conf", "ipcbind=unix\nincludeconf=i.conf\n")],
        "bitcoin-node",
    ),
    wrapper(
        "a config it cannot parse does not count",
        &["node", "-datadir={D}"],
        &[("{D}/bitcoin.conf", "ipcbind=unix\n-bad\n")],
        "bitcoind",
    ),
    wrapper(
        "a missing datadir= in the config is not its concern",
        &["node"],
        &[("{H}/bitcoin.conf", "ipcbind=unix\ndatadir={W}/nope\n")],
        "bitcoin-node",
    ),
    wrapper(
        "an unknown chain's section counts",
        &["node", "-datadir={D}", "-chain=bogus"],
        &[("{D}/bitcoin.conf", "[bogus]\nipcbind=unix\n")],
        "bitcoin-node",
    ),
    wrapper(
        "settings.json does not count",
        &["node", "-regtest", "-datadir={D}"],
        &[("{D}/regtest/settings.json", "{\"ipcbind\": \"unix\"}")],
        "bitcoind",
    ),
    wrapper(
        "-includeconf on the command line, no config file: a warning",
        &["node", "-includeconf=x"],
        &[],
        "bitcoind",
    ),
    WrapperRow {
        what: "-includeconf on the command line with a config file: it aborts",
        args: &["node", "-includeconf=x", "-regtest", "-datadir={D}"],
        files: REGTEST_BIND,
        runs: None,
        stderr: "Assertion",
    },
    WrapperRow {
        what: "conflicting chains: its own error",
        args: &["node", "-regtest", "-testnet", "-datadir={D}"],
        files: &[],
        runs: None,
        stderr: "Error: Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain.",
    },
    WrapperRow {
        what: "a missing -datadir: it aborts",
        args: &["node", "-datadir={W}/nope"],
        files: &[],
        runs: None,
        stderr: "Assertion `base.is_absolute()' failed.",
    },
    wrapper(
        "-m does not look at the options",
        &["-m", "node", "-datadir={W}/nope"],
        &[],
        "bitcoin-node",
    ),
    wrapper(
        "rpc does not look at the options",
        &["rpc", "-regtest", "-testnet", "x"],
        &[],
        "bitcoin-cli",
    ),
];

/// A copy of the real wrapper (when there) with stand-ins beside it that print their name, in
/// a directory not named `bin` (so the wrapper looks beside itself, not in `../libexec`). Made
/// once, before the rows run in parallel: an executable written while another thread forks
/// can fail to run ("Text file busy").
fn wrapper_dir(real: Option<&Path>) -> Scratch {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("w");
    for name in ["bitcoind", "bitcoin-node", "bitcoin-cli"] {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho {name}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    if let Some(real) = real {
        std::fs::copy(real, dir.path().join("bitcoin")).unwrap();
    }
    dir
}

fn check_wrapper(row: &WrapperRow, wrapper_path: &Path, real: bool) -> Vec<String> {
    let dirs = Dirs::new(row.files);
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(format!("{}: {p}", row.what));
    let args: Vec<String> = row.args.iter().map(|a| dirs.expand(a)).collect();
    let planned = bitcoin::wrapper_target_with_env(&args, wrapper_path, None, &dirs.env())
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned());
    if planned.as_deref() != row.runs {
        problem(format!(
            "planned {planned:?}, the table says {:?}",
            row.runs
        ));
    }
    if !real {
        return problems;
    }
    let out = dirs.command(wrapper_path).args(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match row.runs {
        Some(runs) if stdout.trim() != runs => problem(format!(
            "the wrapper ran {:?} ({}), the table says {runs}",
            stdout.trim(),
            stderr.trim()
        )),
        None if out.status.success() || !stderr.contains(row.stderr) => problem(format!(
            "the wrapper ended {} with {:?} / {:?}, the table says it stops with {:?}",
            out.status,
            stdout.trim(),
            stderr.trim(),
            row.stderr
        )),
        _ => {}
    }
    problems
}

/// Every wrapper row: the plan, and the real wrapper when it is there.
#[test]
fn wrapper_choice_matches_the_real_wrapper() {
    let real = peer("bitcoin");
    let dir = wrapper_dir(real.as_deref());
    let wrapper_path = dir.path().join("bitcoin");
    run_table(WRAPPER_ROWS, |row| {
        check_wrapper(row, &wrapper_path, real.is_some())
    });
}
