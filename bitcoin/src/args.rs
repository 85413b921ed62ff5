//! Bitcoin Core command lines, as far as mpspy needs them: where a program will listen
//! (`-ipcbind`), where `bitcoin-cli` will connect (`-ipcconnect`), how to rewrite the arguments so
//! mpspy sits in between, and which program the `bitcoin` wrapper would run (protocol README
//! §5.2, §5.5, §6.1 and §6.2).
//!
//! The option handling follows Bitcoin Core's `ArgsManager`, as the real programs behave
//! (`tests/args.rs` checks a table of cases against the real `bitcoin-node`, `bitcoin-cli` and
//! `bitcoin` wrapper):
//!
//! - `-name`, `--name`, `-name=value`. `-noname` negates (`-noname=0` is a double negative, which
//!   means true, rendered `1`; `-name=0` is the value `0`, not a negation). A bare `-name` is the
//!   empty string, which counts as true for booleans. Parsing stops at the first argument that
//!   does not start with `-`, and at a lone `-`. The nodes (`bitcoin-node`, `bitcoind`) refuse
//!   positional arguments, `section.name` options, `-nodatadir` and a non-negated
//!   `-includeconf`; `bitcoin-cli` refuses `-includeconf` in any form.
//! - The config file (`-conf`, relative to the command line's datadir; default
//!   `<datadir>/bitcoin.conf`, which may be missing; `-noconf` disables it; `-conf=0` is a file
//!   named `0`) has `key=value` lines, `#` comments, `[chain]` sections and `chain.key=value`
//!   keys. `conf=` is refused there.
//! - `includeconf=` in the config file (its top level or the chain's section, chain section
//!   first; chain as the command line and the config give it before includes) names more files,
//!   relative to the command line's datadir. They are read after the config, their values
//!   stored after the config's own; an included file cannot include further. A missing,
//!   unreadable or malformed one stops the node. `bitcoin-cli` does not follow them.
//! - Single-valued options: the last command-line value wins, then the chain's config section,
//!   then the config's top level. Inside the config file the *first* value wins (Bitcoin's
//!   backwards-compatible rule), except for the chain flags (`regtest=` etc.), where the last one
//!   wins. Chain flags only count at the config's top level.
//! - List options (`-ipcbind`): Bitcoin **combines** the command line, the settings file and the
//!   config file (chain section, then top level). The command line does not replace the config
//!   file's. `-noipcbind` discards the command-line values before it, and the config file's too
//!   if nothing follows it.
//! - `datadir=` in the config moves the datadir (a relative one is against the working
//!   directory). One at the config's top level must exist; a missing one in the chain's section
//!   makes the node abort. A `bitcoin.conf` in the final datadir other than the config in use
//!   stops the node unless `-allowignoredconf`.
//! - The node's settings file (`-settings`, default `settings.json` in the network datadir,
//!   `-nosettings` disables it) is merged between the command line and the config: `false` is
//!   a negation, an array a list; an unreadable or malformed one stops the node.
//! - When a file cannot be read, [`plan`] goes on without it (and, for the config file, with the
//!   command line alone) and says so in [`Plan::notes`], so mpspy still interposes what the
//!   rest names and the program reports its own error.
//! - The `bitcoin` wrapper reads the config and included files too, leniently (a file it cannot
//!   read it skips with a warning, keeping what it read before), and not the settings file.
//! - Programs other than Bitcoin Core's own (`sv2-tp`, test peers) are planned from their
//!   command line only: their config files are theirs (sv2-tp, for one, reads `-conf=0` as "no
//!   config file"), and their options are not Bitcoin's.
//!
//! Not modelled: the per-option flags Bitcoin registers (unknown options are accepted here; the
//! program itself rejects them), options Bitcoin only takes from a chain section
//! (`ipcbind`, `datadir`, `conf`, `includeconf` and `settings`, the ones that matter here, are
//! not among them), and bind failures the node meets at run time (an existing non-socket file,
//! a directory it cannot create).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Longest usable unix socket path plus one (`sizeof(sun_path)`): Bitcoin rejects paths of this
/// length or longer.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
const SUN_PATH_LEN: usize = 104;
#[cfg(not(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
const SUN_PATH_LEN: usize = 108;

/// The chain names `-chain=` accepts.
const CHAINS: [&str; 5] = ["main", "test", "testnet4", "signet", "regtest"];

/// Characters Bitcoin trims around config lines, keys and values.
const CONF_TRIM: &[char] = &[' ', '\t', '\r', '\n'];

/// The parts of the environment that decide Bitcoin's default paths. Injected so tests need not
/// touch the real home directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Env {
    /// `$HOME` (Unix and macOS). Unset or empty means `/`, as in Bitcoin.
    pub home: Option<PathBuf>,
    /// The directory relative paths (`-datadir=rel`) are taken against.
    pub cwd: PathBuf,
    /// `%LOCALAPPDATA%` (Windows only): the default datadir is `%LOCALAPPDATA%\Bitcoin`.
    pub local_app_data: Option<PathBuf>,
    /// `%APPDATA%` (Windows only): the legacy datadir `%APPDATA%\Bitcoin` is used if it exists.
    pub app_data: Option<PathBuf>,
}

impl Env {
    /// The environment of this process.
    ///
    /// # Errors
    /// When the current directory cannot be read.
    pub fn from_process() -> io::Result<Self> {
        Ok(Self {
            home: std::env::var_os("HOME").map(PathBuf::from),
            cwd: std::env::current_dir()?,
            local_app_data: std::env::var_os("LOCALAPPDATA").map(PathBuf::from),
            app_data: std::env::var_os("APPDATA").map(PathBuf::from),
        })
    }
}

/// What part a program plays on IPC sockets, by its file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A node: `bitcoin-node` and `bitcoin-gui` (which may `-ipcbind`), and `bitcoind` and
    /// `bitcoin-qt` (which cannot listen: [`plan`] gives them no binds).
    Node,
    /// `bitcoin-cli`, which may connect with `-ipcconnect`.
    Cli,
    /// Anything else.
    Other,
}

/// The role of `program` (a name or path), by its file name: case-insensitive, `.exe` ignored.
#[must_use]
pub fn role(program: &str) -> Role {
    match exe_name(program).as_str() {
        "bitcoin-node" | "bitcoin-gui" | "bitcoind" | "bitcoin-qt" => Role::Node,
        "bitcoin-cli" => Role::Cli,
        _ => Role::Other,
    }
}

/// Where a planned bind came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindOrigin {
    /// An `-ipcbind` argument (see [`BindSpec::arg_index`]).
    CommandLine,
    /// An `ipcbind=` line of the config file or of a file it includes (Bitcoin adds these to
    /// the command line's).
    ConfigFile {
        /// The config file, or the included file.
        file: PathBuf,
        /// The line (from 1).
        line: usize,
    },
    /// The `ipcbind` entry of the node's settings file (`settings.json`), which Bitcoin merges
    /// between the command line and the config file.
    SettingsFile {
        /// The settings file.
        file: PathBuf,
    },
    /// Added by mpspy (`add_default_bind`): `-ipcbind=unix`.
    Added,
}

/// A socket the program would listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindSpec {
    /// The public path (where clients will connect).
    pub path: PathBuf,
    /// The index in `args` of the argument that asked for it; `None` if it came from the config
    /// file or was added by mpspy.
    pub arg_index: Option<usize>,
    /// Where it came from.
    pub origin: BindOrigin,
}

/// What a Bitcoin program would do on IPC sockets, worked out from its arguments and config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Sockets the program would listen on (public paths, in Bitcoin's order), each with the
    /// index of the argv entry that asked for it (None if it came from the config file or was
    /// added by us).
    pub binds: Vec<BindSpec>,
    /// Where the program would connect (cli), if anywhere.
    pub connect: Option<PathBuf>,
    /// The network datadir: the datadir plus the chain's subdirectory.
    pub network_datadir: PathBuf,
    /// The chain: "main", "test", "testnet4", "signet" or "regtest".
    pub chain: String,
    /// The config file, as the program's `Config file:` log line names it.
    pub config: ConfigFile,
    /// The files the config file includes (`includeconf=`), resolved, in the order they were
    /// read.
    pub included: Vec<PathBuf>,
    /// The node's settings file, when it exists and was read.
    pub settings: Option<PathBuf>,
    /// What could not be read and was left out of the plan (an unreadable or malformed config,
    /// included or settings file): the program reports these itself, so they are notes for
    /// mpspy's outputs, not errors.
    pub notes: Vec<String>,
}

/// Which config file a program reads (`-conf`, `-noconf`, default `<datadir>/bitcoin.conf`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigFile {
    /// `-noconf`.
    Disabled,
    /// The default config file, which does not exist (that is not an error).
    NotFound(PathBuf),
    /// Read.
    Read(PathBuf),
    /// Named but not readable or malformed (see [`Plan::notes`]): the program stops at it.
    Unreadable(PathBuf),
    /// Not consulted: programs other than Bitcoin Core's are planned from their command line.
    NotConsulted,
}

impl ConfigFile {
    /// What Bitcoin's `Config file: …` log line says, for the outcomes it logs (it stops before
    /// logging when the file cannot be read).
    #[must_use]
    pub fn log_text(&self) -> Option<String> {
        match self {
            ConfigFile::Disabled => Some("<disabled>".to_string()),
            ConfigFile::NotFound(p) => Some(format!("{} (not found, skipping)", p.display())),
            ConfigFile::Read(p) => Some(p.display().to_string()),
            ConfigFile::Unreadable(_) | ConfigFile::NotConsulted => None,
        }
    }
}

/// Why a Bitcoin command line could not be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BitcoinArgsError {
    /// More than one chain option (Bitcoin's own message).
    #[error(
        "Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain. Can use at most one."
    )]
    ChainConflict,
    /// `-chain=` names no known chain.
    #[error("-chain: unknown chain '{0}' (expected main, test, testnet4, signet or regtest)")]
    UnknownChain(String),
    /// `-datadir` (command line or config) is not an existing directory.
    #[error("-datadir: directory {} does not exist", .0.display())]
    DatadirMissing(PathBuf),
    /// `-includeconf` on the command line, which Bitcoin's nodes refuse unless the last one is
    /// negated (Bitcoin's message).
    #[error("-includeconf cannot be used from commandline; -includeconf={0}")]
    IncludeConfOnCommandLine(String),
    /// An option the program does not accept at all: a `section.name` on the command line, or
    /// `-includeconf` for `bitcoin-cli` (Bitcoin's message; other unknown options are not
    /// known here and left for the program to refuse).
    #[error("Invalid parameter {0}")]
    InvalidParameter(String),
    /// `-nodatadir` (Bitcoin's message).
    #[error("Negating of -datadir is meaningless and therefore forbidden")]
    NegatedDatadir,
    /// A positional argument, which `bitcoin-node` and `bitcoind` refuse (Bitcoin's message).
    #[error("Command line contains unexpected token '{0}', see bitcoind -h for a list of options.")]
    UnexpectedToken(String),
    /// The datadir holds a `bitcoin.conf` other than the config file in use, which Bitcoin's
    /// nodes refuse unless `-allowignoredconf` is set.
    #[error(
        "-conf: the data directory {} contains a bitcoin.conf file which is ignored, because {} is being used instead (allowignoredconf=1 makes this a warning)",
        datadir.display(), used.display()
    )]
    IgnoredConfig {
        /// The datadir in force.
        datadir: PathBuf,
        /// The config file in use.
        used: PathBuf,
    },
    /// An `ipcbind` value in the settings file that is not a string or a boolean: Bitcoin stops
    /// with a type error when it reads the option.
    #[error("-settings: {}: {name} holds a JSON {kind}, not a string", path.display())]
    SettingsValue {
        /// The settings file.
        path: PathBuf,
        /// The option.
        name: &'static str,
        /// The JSON type found ("number", "null", "object", "array").
        kind: &'static str,
    },
    /// An explicitly given config file could not be read.
    #[error("-conf: cannot read {}: {source}", path.display())]
    ConfRead {
        /// The config file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The config file is a directory.
    #[error("-conf: {} is a directory", .0.display())]
    ConfIsDirectory(PathBuf),
    /// The config file is malformed (Bitcoin would refuse it too).
    #[error("-conf: {}: {message}", path.display())]
    ConfParse {
        /// The config file.
        path: PathBuf,
        /// Bitcoin's description, with the line number.
        message: String,
    },
    /// A file named by `includeconf=` could not be read.
    #[error("includeconf: cannot read {name:?} ({})", path.display())]
    IncludeRead {
        /// The name as the config file gives it.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A file named by `includeconf=` is a directory.
    #[error("includeconf: {} is a directory", .0.display())]
    IncludeIsDirectory(PathBuf),
    /// The settings file cannot be read or is not a JSON object with unique keys (Bitcoin
    /// stops at it).
    #[error("-settings: {}: {message}", path.display())]
    SettingsRead {
        /// The settings file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An `-ipcbind`/`-ipcconnect` value that is not `unix` or `unix:<path>`.
    #[error("{option}: Unrecognized address '{address}'")]
    UnrecognizedAddress {
        /// `-ipcbind` or `-ipcconnect`.
        option: &'static str,
        /// The value.
        address: String,
    },
    /// A socket path too long for `sockaddr_un` (Bitcoin's message).
    #[error("{option}: Unix address path \"{}\" exceeded maximum socket path length", path.display())]
    PathTooLong {
        /// `-ipcbind` or `-ipcconnect`.
        option: &'static str,
        /// The path.
        path: PathBuf,
    },
}

/// Works out where `program` (run with `args`, without argv0) would listen or connect.
///
/// `add_default_bind`: for `bitcoin-node`/`bitcoin-gui` with no `-ipcbind` anywhere (command line
/// or config; an explicit `-noipcbind` counts as given), plan a `-ipcbind=unix` bind
/// ([`BindOrigin::Added`]). Never for `bitcoind`/`bitcoin-qt`, which cannot listen.
///
/// For `bitcoin-cli`, `-ipcconnect=auto` (the default) plans a connection only if
/// `<network datadir>/node.sock` exists as a socket (otherwise the cli falls back to HTTP), and
/// none at all when `-rpcconnect` is set.
///
/// A config file (or a file it includes) that cannot be read or parsed is left out and named in
/// [`Plan::notes`]: what the command line names is still planned. So is a settings file that
/// cannot be read (the config's binds are still planned).
///
/// # Errors
/// The problems Bitcoin itself would stop at before listening, where no plan is possible: the
/// command-line options it refuses (positional arguments for the nodes, `section.name`,
/// `-nodatadir`, `-includeconf`), a missing datadir (`-datadir` or the config's `datadir=`),
/// conflicting or unknown chains, a datadir holding a `bitcoin.conf` that is being ignored, a
/// settings-file `ipcbind` that is not a string, unrecognized addresses, and socket paths that
/// are too long. The program reports these itself when it is run as given.
pub fn plan(
    program: &str,
    args: &[String],
    env: &Env,
    add_default_bind: bool,
) -> Result<Plan, BitcoinArgsError> {
    plan_for(Os::CURRENT, program, args, env, add_default_bind)
}

/// Returns `args` with what mpspy adds: `-ipcbind=unix` when the plan has an
/// [`BindOrigin::Added`] bind, and `-ipcconnect=unix:<private_connect>` in place of the
/// connection the program would make (the last command-line `-ipcconnect`, which is the one in
/// force, is replaced; otherwise the option is added). Added options go after the last option,
/// before the first positional argument. Binds are not rewritten: the program listens where it
/// would, and mpspy takes its socket over once it is there (`mpspy_capture::takeover`).
#[must_use]
pub fn rewrite(args: &[String], plan: &Plan, private_connect: Option<&Path>) -> Vec<String> {
    let cmd = parse_command_line(args, Os::CURRENT);
    let mut out = args.to_vec();
    let mut extra = Vec::new();
    if plan.binds.iter().any(|b| b.origin == BindOrigin::Added) {
        extra.push("-ipcbind=unix".to_string());
    }
    if let (Some(_), Some(private)) = (&plan.connect, private_connect) {
        let arg = format!("-ipcconnect=unix:{}", private.to_string_lossy());
        match cmd.entries.iter().rev().find(|e| e.name == "ipcconnect") {
            Some(e) => out[e.index] = arg,
            None => extra.push(arg),
        }
    }
    out.splice(cmd.end..cmd.end, extra);
    out
}

/// For the `bitcoin` wrapper (README §5.5): the program it would run for `args` (its arguments,
/// without argv0) and that program's arguments. `wrapper_path` is the wrapper's argv0 (a bare
/// name is looked up in `env_path`, like the wrapper does); `env_path` is `$PATH`.
///
/// Lookup order: `<real dir>/../libexec/<exe>` when the wrapper's real directory (symlinks
/// resolved) is named `bin`; (Windows: `<dir>/daemon/<exe>`); `<dir>/<exe>`; then `$PATH`, only
/// if the wrapper was started by a bare name. Commands: `node` → `bitcoin-node` if multiprocess
/// is selected (`-m`, or `-ipcbind`/`-ipcconnect`/`-ipcfd` among the node's arguments; `-M`
/// forces monolithic) else `bitcoind`; `gui` → `bitcoin-gui`/`bitcoin-qt`; `rpc` → `bitcoin-cli
/// -named`; `wallet`, `tx`, `util` → `bitcoin-wallet`, `bitcoin-tx`, `bitcoin-util`.
///
/// This variant does not read config files; [`wrapper_target_with_env`] also finds `ipc*`
/// options there, as the wrapper does since v30.1.
///
/// `None` when not applicable: help or version requests, no or another command, an unknown
/// wrapper option, or no program found where the wrapper would look.
#[must_use]
pub fn wrapper_target(
    args: &[String],
    wrapper_path: &Path,
    env_path: Option<&OsStr>,
) -> Option<(PathBuf, Vec<String>)> {
    wrapper_target_impl(args, wrapper_path, env_path, None)
}

/// [`wrapper_target`], choosing multiprocess also when the config file (read as the target would,
/// chain-aware) sets `ipcbind`, `ipcconnect` or `ipcfd`, as the `bitcoin` wrapper does since
/// v30.1. If the config cannot be read, only the arguments decide.
#[must_use]
pub fn wrapper_target_with_env(
    args: &[String],
    wrapper_path: &Path,
    env_path: Option<&OsStr>,
    env: &Env,
) -> Option<(PathBuf, Vec<String>)> {
    wrapper_target_impl(args, wrapper_path, env_path, Some(env))
}

// ---------------------------------------------------------------------------------------------
// Internals

/// Which platform's conventions apply (a parameter so tests can cover all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Os {
    Unix,
    Mac,
    Windows,
}

impl Os {
    const CURRENT: Os = if cfg!(windows) {
        Os::Windows
    } else if cfg!(target_os = "macos") {
        Os::Mac
    } else {
        Os::Unix
    };
}

/// The lowercased file name of a program, without `.exe`.
fn exe_name(program: &str) -> String {
    let name = program
        .rsplit(|c| c == '/' || (cfg!(windows) && c == '\\'))
        .next()
        .unwrap_or(program)
        .to_ascii_lowercase();
    match name.strip_suffix(".exe") {
        Some(stem) => stem.to_string(),
        None => name,
    }
}

/// The `<name>.sock` stem of programs that can `-ipcbind` (their exe name minus `bitcoin-`).
fn listener_stem(program: &str) -> Option<String> {
    match exe_name(program).as_str() {
        "bitcoin-node" => Some("node".into()),
        "bitcoin-gui" => Some("gui".into()),
        // bitcoind and bitcoin-qt reject -ipcbind.
        "bitcoind" | "bitcoin-qt" => None,
        // Other programs built on Bitcoin's option parser (sv2-tp, test peers) name the default
        // socket after themselves, as bitcoin-node does.
        other => Some(other.strip_prefix("bitcoin-").unwrap_or(other).to_string()),
    }
}

/// A setting value as Bitcoin stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Str(String),
    /// From a double negative (`-nofoo=0`), or `true` in the settings file.
    True,
    /// From a negation (`-nofoo`), or `false` in the settings file.
    False,
    /// A settings-file value that is neither a string nor a boolean (an array, a number, null,
    /// an object). Bitcoin keeps it as it is and only looks inside when the option is read.
    Json(serde_json::Value),
}

impl Value {
    fn is_false(&self) -> bool {
        *self == Value::False
    }

    fn as_bool(&self) -> bool {
        match self {
            Value::Str(s) => interpret_bool(s),
            Value::True => true,
            Value::False | Value::Json(_) => false,
        }
    }

    /// As `GetArg`/`GetArgs` render it.
    fn to_arg_string(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::True => "1".to_string(),
            Value::False => "0".to_string(),
            Value::Json(j) => j.to_string(),
        }
    }

    /// How Bitcoin quotes a value in its messages: strings in quotes, booleans bare.
    fn quoted(&self) -> String {
        match self {
            Value::Str(s) => format!("\"{s}\""),
            Value::True => "true".to_string(),
            Value::False => "false".to_string(),
            Value::Json(j) => j.to_string(),
        }
    }
}

/// Bitcoin's `InterpretBool`: empty is true, otherwise the leading integer is nonzero.
fn interpret_bool(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    // LocaleIndependentAtoi: trim, optional '+' (but not "+-"), optional '-', then digits.
    let t = s.trim_matches(|c: char| " \x0c\n\r\t\x0b".contains(c));
    let t = match t.strip_prefix('+') {
        Some(rest) if rest.starts_with('-') => return false,
        Some(rest) => rest,
        None => t,
    };
    let digits = t.strip_prefix('-').unwrap_or(t);
    digits
        .chars()
        .take_while(char::is_ascii_digit)
        .any(|c| c != '0')
}

/// `InterpretKey`: `section.name` and the `no` prefix.
struct Key<'a> {
    section: &'a str,
    name: &'a str,
    negated: bool,
}

fn interpret_key(key: &str) -> Key<'_> {
    let (section, rest) = match key.find('.') {
        Some(dot) => (&key[..dot], &key[dot + 1..]),
        None => ("", key),
    };
    match rest.strip_prefix("no") {
        Some(name) => Key {
            section,
            name,
            negated: true,
        },
        None => Key {
            section,
            name: rest,
            negated: false,
        },
    }
}

/// `InterpretValue`: a negation is false unless its value is false (a double negative).
fn interpret_value(negated: bool, value: Option<&str>) -> Value {
    if negated {
        match value {
            Some(v) if !interpret_bool(v) => Value::True,
            _ => Value::False,
        }
    } else {
        Value::Str(value.unwrap_or("").to_string())
    }
}

/// One option from the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CmdEntry {
    name: String,
    value: Value,
    /// Index in `args`.
    index: usize,
}

impl CmdEntry {
    /// Written as `-noname` (with or without a value): only negations give non-string values.
    fn negated(&self) -> bool {
        !matches!(self.value, Value::Str(_))
    }
}

#[derive(Clone, Debug, Default)]
struct CmdLine {
    entries: Vec<CmdEntry>,
    /// Index of the first argument that is not an option (or `args.len()`).
    end: usize,
    /// Indices of options with a `section.` prefix, which Bitcoin's programs refuse on the
    /// command line (the `bitcoin` wrapper only warns).
    dotted: Vec<usize>,
}

/// `ParseParameters`, minus the registered-option checks.
fn parse_command_line(args: &[String], os: Os) -> CmdLine {
    let mut cmd = CmdLine {
        entries: Vec::new(),
        end: args.len(),
        dotted: Vec::new(),
    };
    for (index, arg) in args.iter().enumerate() {
        if os == Os::Mac && arg.starts_with("-psn_") {
            continue;
        }
        if arg == "-" {
            cmd.end = index;
            break;
        }
        let (key, value) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (arg.as_str(), None),
        };
        let mut key = key.to_string();
        if os == Os::Windows {
            key = key.to_ascii_lowercase();
            if key.starts_with('/') {
                key.replace_range(..1, "-");
            }
        }
        let Some(key) = key.strip_prefix('-') else {
            cmd.end = index;
            break;
        };
        // --foo is -foo.
        let key = key.strip_prefix('-').unwrap_or(key);
        let k = interpret_key(key);
        if !k.section.is_empty() {
            cmd.dotted.push(index);
            continue;
        }
        if k.name.is_empty() {
            continue;
        }
        cmd.entries.push(CmdEntry {
            name: k.name.to_string(),
            value: interpret_value(k.negated, value),
            index,
        });
    }
    cmd
}

/// Whose rules apply: Bitcoin's programs read different files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reader {
    /// `bitcoin-node`, `bitcoind`, `bitcoin-gui`, `bitcoin-qt`: the config file and the files it
    /// includes, the settings file, and the checks the node stops at.
    Node,
    /// `bitcoin-cli`: the config file only. It does not register `-includeconf`, so its config's
    /// `includeconf=` lines are ignored as unknown keys (observed: an included file's settings do
    /// not count, and a missing one is no error), and it has no settings file.
    Cli,
    /// The `bitcoin` wrapper deciding between `bitcoin-node` and `bitcoind`: the config and
    /// included files, leniently (it warns about a file it cannot read and keeps what it read
    /// before it; it ignores the checks the node makes afterwards).
    Wrapper,
    /// Programs other than Bitcoin Core's: their command line only.
    CommandLine,
}

/// One option from a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ConfEntry {
    /// "" for the top level, else the chain section.
    section: String,
    name: String,
    value: Value,
    /// Index into [`Config::files`].
    file: usize,
    /// From 1.
    line: usize,
}

#[derive(Clone, Debug)]
struct Config {
    /// The config file, then the files it includes, in the order read.
    files: Vec<PathBuf>,
    /// In the order Bitcoin stores them: the config file's, then each included file's.
    entries: Vec<ConfEntry>,
}

enum ConfLine<'a> {
    Skip,
    Opt { name: String, value: &'a str },
    Error(String),
}

/// One line of `GetConfigOptions`. `prefix` tracks the current `[section]`.
fn classify_conf_line<'a>(raw: &'a str, line: usize, prefix: &mut String) -> ConfLine<'a> {
    let (content, used_hash) = match raw.find('#') {
        Some(p) => (&raw[..p], true),
        None => (raw, false),
    };
    let s = content.trim_matches(CONF_TRIM);
    if s.is_empty() {
        return ConfLine::Skip;
    }
    if s.len() >= 2 && s.starts_with('[') && s.ends_with(']') {
        *prefix = format!("{}.", &s[1..s.len() - 1]);
        return ConfLine::Skip;
    }
    if s.starts_with('-') {
        return ConfLine::Error(format!(
            "parse error on line {line}: {s}, options in configuration file must be specified without leading -"
        ));
    }
    let Some((k, v)) = s.split_once('=') else {
        let mut message = format!("parse error on line {line}: {s}");
        if s.starts_with("no") {
            message.push_str(&format!(
                ", if you intended to specify a negated option, use {s}=1 instead"
            ));
        }
        return ConfLine::Error(message);
    };
    let name = format!("{prefix}{}", k.trim_matches(CONF_TRIM));
    if used_hash && name.contains("rpcpassword") {
        return ConfLine::Error(format!(
            "parse error on line {line}, using # in rpcpassword can be ambiguous and should be avoided"
        ));
    }
    ConfLine::Opt {
        name,
        value: v.trim_matches(CONF_TRIM),
    }
}

/// `GetConfigOptions` + `ReadConfigStream` for one file (unknown keys are kept; the program
/// ignores them). Each file starts at the top level: a section does not carry over into an
/// included file, or back out of it (observed).
fn parse_config(text: &str, path: &Path, file: usize) -> Result<Vec<ConfEntry>, BitcoinArgsError> {
    let error = |message: String| BitcoinArgsError::ConfParse {
        path: path.to_path_buf(),
        message,
    };
    let mut prefix = String::new();
    let mut entries = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        match classify_conf_line(raw, line, &mut prefix) {
            ConfLine::Skip => {}
            ConfLine::Error(message) => return Err(error(message)),
            ConfLine::Opt { name, value } => {
                let k = interpret_key(&name);
                if k.name == "conf" {
                    // Bitcoin's message has no line number.
                    return Err(error(format!(
                        "conf cannot be set in the configuration file; use includeconf= if you want to include additional config files (line {line})"
                    )));
                }
                entries.push(ConfEntry {
                    section: k.section.to_string(),
                    name: k.name.to_string(),
                    value: interpret_value(k.negated, Some(value)),
                    file,
                    line,
                });
            }
        }
    }
    Ok(entries)
}

/// The node's settings file (`settings.json`): one JSON object, option name to value.
#[derive(Clone, Debug)]
struct SettingsFile {
    path: PathBuf,
    values: Vec<(String, serde_json::Value)>,
}

/// The members of a JSON object in file order, refusing duplicate keys as Bitcoin does
/// (serde_json's own map would keep the last one silently).
struct UniqueMembers(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = UniqueMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueMembers, A::Error> {
                let mut out: Vec<(String, serde_json::Value)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(serde::de::Error::custom(format!("found duplicate key {k}")));
                    }
                    out.push((k, v));
                }
                Ok(UniqueMembers(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `ReadSettings`: `None` when the file does not exist (the node creates it).
fn read_settings(path: &Path) -> Result<Option<SettingsFile>, BitcoinArgsError> {
    let error = |message: String| BitcoinArgsError::SettingsRead {
        path: path.to_path_buf(),
        message,
    };
    if path.is_dir() {
        return Err(error("is a directory".to_string()));
    }
    let text = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(e.to_string())),
    };
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| error(format!("does not contain valid JSON ({e})")))?;
    if !json.is_object() {
        return Err(error(format!("found non-object value {json}")));
    }
    let members: UniqueMembers = serde_json::from_slice(&text).map_err(|e| error(e.to_string()))?;
    Ok(Some(SettingsFile {
        path: path.to_path_buf(),
        values: members.0,
    }))
}

/// A settings-file value as a setting: the booleans are negation and double negative, as on
/// the command line; anything else but a string is kept as JSON.
fn settings_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Bool(true) => Value::True,
        serde_json::Value::Bool(false) => Value::False,
        serde_json::Value::String(s) => Value::Str(s.clone()),
        other => Value::Json(other.clone()),
    }
}

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Cmd(usize),
    Settings,
    Conf { file: usize, line: usize },
}

/// A source's values for one option, in order, and whether the source is the config file.
type Span = (bool, Vec<(Value, Src)>);

/// Bitcoin's merged settings: command line, settings file, then the config's chain section,
/// then its top level (`MergeSettings`).
#[derive(Clone, Copy)]
struct Settings<'a> {
    cmd: &'a [CmdEntry],
    rw: Option<&'a SettingsFile>,
    conf: Option<&'a Config>,
}

/// Index just past the last negation (`SettingsSpan::negated`).
fn after_last_negation(values: &[(Value, Src)]) -> usize {
    values
        .iter()
        .rposition(|(v, _)| v.is_false())
        .map_or(0, |i| i + 1)
}

impl Settings<'_> {
    /// The non-empty sources for `name`, highest priority first.
    fn spans(&self, name: &str, network: Option<&str>) -> Vec<Span> {
        let mut out = Vec::new();
        let cmd: Vec<_> = self
            .cmd
            .iter()
            .filter(|e| e.name == name)
            .map(|e| (e.value.clone(), Src::Cmd(e.index)))
            .collect();
        if !cmd.is_empty() {
            out.push((false, cmd));
        }
        // The settings file's keys are option names as they are: no sections, no "no" prefix
        // (observed: "noipcbind" and "regtest.ipcbind" there do nothing). A JSON array is one
        // value, so a `false` inside it is no negation (observed: it binds "0").
        if let Some((_, v)) = self
            .rw
            .and_then(|rw| rw.values.iter().find(|(k, _)| k == name))
        {
            out.push((false, vec![(settings_value(v), Src::Settings)]));
        }
        if let Some(conf) = self.conf {
            let mut sections = Vec::new();
            if let Some(n) = network.filter(|n| !n.is_empty()) {
                sections.push(n);
            }
            sections.push("");
            for section in sections {
                let span: Vec<_> = conf
                    .entries
                    .iter()
                    .filter(|e| e.section == section && e.name == name)
                    .map(|e| {
                        let src = Src::Conf {
                            file: e.file,
                            line: e.line,
                        };
                        (e.value.clone(), src)
                    })
                    .collect();
                if !span.is_empty() {
                    out.push((true, span));
                }
            }
        }
        out
    }

    /// `GetSetting`: the value in force for a single-valued option.
    fn get(&self, name: &str, network: Option<&str>, chain_type: bool) -> Option<Value> {
        // The first source that has the option decides.
        let (is_conf, span) = self.spans(name, network).into_iter().next()?;
        let rest = &span[after_last_negation(&span)..];
        let pick = if is_conf && !chain_type {
            rest.first()
        } else {
            rest.last()
        };
        Some(pick.map_or(Value::False, |(v, _)| v.clone()))
    }

    /// `GetSettingsList`: the values of a list option, command line and config combined.
    fn get_list(&self, name: &str, network: Option<&str>) -> Vec<(Value, Src)> {
        let mut result = Vec::new();
        let mut done = false;
        let mut prev_negated_empty = false;
        for (is_conf, span) in self.spans(name, network) {
            // Bitcoin's "zombie" rule: config values apply even after a command-line (or
            // settings-file) negation, unless nothing but the negation came before them.
            let add_zombie = is_conf && !prev_negated_empty;
            let start = after_last_negation(&span);
            if !done || add_zombie {
                result.extend_from_slice(&span[start..]);
            }
            done |= start > 0;
            prev_negated_empty |=
                span.last().is_some_and(|(v, _)| v.is_false()) && result.is_empty();
        }
        result
    }

    /// `GetArgs`: [`Self::get_list`] as strings. A settings-file array gives its elements
    /// (booleans as "1"/"0"); other JSON types are the type error Bitcoin stops at, reported
    /// as the JSON type's name.
    fn get_strings(
        &self,
        name: &str,
        network: Option<&str>,
    ) -> Result<Vec<(String, Src)>, &'static str> {
        fn scalar(j: &serde_json::Value) -> Result<String, &'static str> {
            match j {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Bool(b) => Ok(if *b { "1" } else { "0" }.to_string()),
                other => Err(json_kind(other)),
            }
        }
        let mut out = Vec::new();
        for (value, src) in self.get_list(name, network) {
            match value {
                Value::Json(serde_json::Value::Array(items)) => {
                    for item in &items {
                        out.push((scalar(item)?, src));
                    }
                }
                Value::Json(other) => return Err(json_kind(&other)),
                v => out.push((v.to_arg_string(), src)),
            }
        }
        Ok(out)
    }

    /// `IsArgSet`: given anywhere that applies (a negation counts).
    fn is_set(&self, name: &str, network: Option<&str>) -> bool {
        !self.spans(name, network).is_empty()
    }

    /// `GetPathArg`-style string: `None` when unset or empty, `Some("")` never.
    fn get_nonempty(&self, name: &str, network: Option<&str>) -> Option<String> {
        self.get(name, network, false)
            .filter(|v| !v.is_false())
            .map(|v| v.to_arg_string())
            .filter(|s| !s.is_empty())
    }
}

/// The name UniValue gives a JSON type in its type errors.
fn json_kind(j: &serde_json::Value) -> &'static str {
    match j {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Bitcoin's default datadir.
fn default_datadir(os: Os, env: &Env) -> PathBuf {
    match os {
        Os::Windows => {
            if let Some(app_data) = &env.app_data {
                let legacy = app_data.join("Bitcoin");
                if legacy.exists() {
                    return legacy;
                }
            }
            env.local_app_data
                .as_deref()
                .unwrap_or(&env.cwd)
                .join("Bitcoin")
        }
        Os::Unix | Os::Mac => {
            let home = env
                .home
                .clone()
                .filter(|h| !h.as_os_str().is_empty())
                .unwrap_or_else(|| PathBuf::from("/"));
            if os == Os::Mac {
                home.join("Library/Application Support/Bitcoin")
            } else {
                home.join(".bitcoin")
            }
        }
    }
}

/// `p` against `cwd`, without `.` components or a trailing separator (as Bitcoin prints the
/// datadir: observed `-datadir=./d/.` → `<cwd>/d`; `..` stays).
fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    joined.components().collect()
}

/// `-datadir` as given (`None`: unset, negated or empty, meaning the default), made absolute.
fn datadir_arg(settings: &Settings<'_>, network: Option<&str>, env: &Env) -> Option<PathBuf> {
    let value = settings.get_nonempty("datadir", network)?;
    Some(absolute(&env.cwd, Path::new(&value)))
}

/// The datadir (`GetDataDirBase`): `-datadir` made absolute, which must exist, or the default.
fn datadir(
    settings: &Settings<'_>,
    network: Option<&str>,
    os: Os,
    env: &Env,
) -> Result<PathBuf, BitcoinArgsError> {
    match datadir_arg(settings, network, env) {
        None => Ok(default_datadir(os, env)),
        Some(path) if path.is_dir() => Ok(path),
        Some(path) => Err(BitcoinArgsError::DatadirMissing(path)),
    }
}

/// `p` against a datadir (`AbsPathForConfigVal`): an absolute path stays.
fn config_val_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// `p` against `dir`, which the program creates (as plain directories) before it looks there:
/// a `..` that steps out of a directory not there yet is taken lexically, as it will be once the
/// directory exists (observed: `-settings=../x.json` on a fresh datadir is `<datadir>/x.json`).
fn in_new_dir(dir: &Path, p: &str) -> PathBuf {
    use std::path::Component;
    let p = Path::new(p);
    if p.is_absolute() || dir.is_dir() {
        return config_val_path(dir, &p.to_string_lossy());
    }
    let mut out = dir.to_path_buf();
    // How many of `out`'s last components do not exist yet.
    let mut fresh = dir.ancestors().take_while(|a| !a.is_dir()).count();
    for c in p.components() {
        match c {
            Component::ParentDir if fresh > 0 => {
                out.pop();
                fresh -= 1;
            }
            Component::CurDir => {}
            other => {
                out.push(other);
                if fresh > 0 {
                    fresh += 1;
                }
            }
        }
    }
    out
}

/// What reading the config files gave.
struct ConfRead {
    config: Option<Config>,
    file: ConfigFile,
    /// A file that could not be read or parsed. The node and the cli stop at it (the plan
    /// leaves the whole config out); the wrapper keeps what it read before it.
    problem: Option<BitcoinArgsError>,
}

/// `ReadConfigFiles`. `base` is the datadir from the command line, against which both the
/// config file and included files are found (observed: not the datadir the config sets, nor
/// the config file's directory). `Err` for what stops the program outright.
fn read_config(reader: Reader, cmd: &CmdLine, base: &Path) -> Result<ConfRead, BitcoinArgsError> {
    let cmd_settings = Settings {
        cmd: &cmd.entries,
        rw: None,
        conf: None,
    };
    let explicit = cmd_settings.is_set("conf", None);
    let name = match cmd_settings.get("conf", None, false) {
        Some(Value::False) => {
            return Ok(ConfRead {
                config: None,
                file: ConfigFile::Disabled,
                problem: None,
            });
        }
        // -conf=0 is a file named "0" and -noconf=0 one named "1" (observed); -conf= is the
        // default name, which must then exist.
        Some(v) if !v.to_arg_string().is_empty() => v.to_arg_string(),
        _ => "bitcoin.conf".to_string(),
    };
    let path = config_val_path(base, &name);
    let unreadable = |problem: BitcoinArgsError| ConfRead {
        config: None,
        file: ConfigFile::Unreadable(path.clone()),
        problem: Some(problem),
    };
    if path.is_dir() {
        return Ok(unreadable(BitcoinArgsError::ConfIsDirectory(path.clone())));
    }
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(source) if explicit => {
            let problem = BitcoinArgsError::ConfRead {
                path: path.clone(),
                source,
            };
            return Ok(unreadable(problem));
        }
        // A default config that is missing (or unreadable) is skipped.
        Err(_) => {
            return Ok(ConfRead {
                config: None,
                file: ConfigFile::NotFound(path),
                problem: None,
            });
        }
    };
    let entries = match parse_config(&String::from_utf8_lossy(&bytes), &path, 0) {
        Ok(e) => e,
        Err(problem) => return Ok(unreadable(problem)),
    };
    let mut config = Config {
        files: vec![path.clone()],
        entries,
    };
    let file = ConfigFile::Read(path);
    if matches!(reader, Reader::Cli | Reader::CommandLine) {
        return Ok(ConfRead {
            config: Some(config),
            file,
            problem: None,
        });
    }
    // A (last-negated) -includeconf on the command line turns includes off. The nodes refuse
    // any other -includeconf there before reading anything; the wrapper only warns about it
    // and then trips over it once there is a config file (observed: an assertion failure).
    if let Some(last) = cmd.entries.iter().rev().find(|e| e.name == "includeconf") {
        if !last.value.is_false() {
            return Err(BitcoinArgsError::IncludeConfOnCommandLine(
                last.value.quoted(),
            ));
        }
        return Ok(ConfRead {
            config: Some(config),
            file,
            problem: None,
        });
    }
    // The chain is not settled yet: the chain's section named by the command line and the
    // config file itself is followed (unchecked, so -chain=bogus follows [bogus]).
    let chain = chain_name(&Settings {
        cmd: &cmd.entries,
        rw: None,
        conf: Some(&config),
    })?;
    let includes = |section: &str| -> Vec<String> {
        let values: Vec<_> = config
            .entries
            .iter()
            .filter(|e| e.section == section && e.name == "includeconf")
            .map(|e| {
                (
                    e.value.clone(),
                    Src::Conf {
                        file: 0,
                        line: e.line,
                    },
                )
            })
            .collect();
        values[after_last_negation(&values)..]
            .iter()
            .map(|(v, _)| v.to_arg_string())
            .collect()
    };
    // The chain's section first, then the top level (observed), each in file order. Only the
    // config file's own includeconf lines count: included files cannot include (Bitcoin warns
    // and ignores them).
    let mut names = includes(&chain);
    names.extend(includes(""));
    for name in names {
        let index = config.files.len();
        let path = config_val_path(base, &name);
        let problem = if name.is_empty() {
            // An empty name names nothing (observed: "Failed to include configuration file ").
            Some(BitcoinArgsError::IncludeRead {
                name,
                path: base.to_path_buf(),
            })
        } else if path.is_dir() {
            Some(BitcoinArgsError::IncludeIsDirectory(path))
        } else {
            match fs::read(&path) {
                Err(_) => Some(BitcoinArgsError::IncludeRead { name, path }),
                Ok(bytes) => match parse_config(&String::from_utf8_lossy(&bytes), &path, index) {
                    Err(problem) => Some(problem),
                    Ok(entries) => {
                        config.entries.extend(entries);
                        config.files.push(path);
                        None
                    }
                },
            }
        };
        if problem.is_some() {
            return Ok(ConfRead {
                config: Some(config),
                file,
                problem,
            });
        }
    }
    Ok(ConfRead {
        config: Some(config),
        file,
        problem: None,
    })
}

/// `GetChainTypeString`: the chain name the options give, unchecked; only a conflict is an
/// error.
fn chain_name(settings: &Settings<'_>) -> Result<String, BitcoinArgsError> {
    let flag = |name: &str| settings.get(name, None, true).is_some_and(|v| v.as_bool());
    let regtest = flag("regtest");
    let signet = flag("signet");
    let testnet = flag("testnet");
    let testnet4 = flag("testnet4");
    // -nochain is "0" here (observed: -nochain -regtest conflicts; -nochain alone is the
    // unknown chain "0").
    let chain_arg = settings
        .get("chain", None, false)
        .map(|v| v.to_arg_string());
    let count = [chain_arg.is_some(), regtest, signet, testnet, testnet4]
        .iter()
        .filter(|b| **b)
        .count();
    if count > 1 {
        return Err(BitcoinArgsError::ChainConflict);
    }
    Ok(match chain_arg {
        Some(c) => c,
        None if regtest => "regtest".to_string(),
        None if signet => "signet".to_string(),
        None if testnet => "test".to_string(),
        None if testnet4 => "testnet4".to_string(),
        None => "main".to_string(),
    })
}

/// `GetChainType`: [`chain_name`], which must name a known chain.
fn chain(settings: &Settings<'_>) -> Result<String, BitcoinArgsError> {
    let c = chain_name(settings)?;
    if CHAINS.contains(&c.as_str()) {
        Ok(c)
    } else {
        Err(BitcoinArgsError::UnknownChain(c))
    }
}

/// The chain's subdirectory of the datadir.
fn chain_subdir(chain: &str) -> &str {
    match chain {
        "main" => "",
        "test" => "testnet3",
        other => other,
    }
}

/// Everything parsed: command line, config, settings, chain and datadirs.
struct Resolved {
    cmd: CmdLine,
    conf: Option<Config>,
    rw: Option<SettingsFile>,
    config_file: ConfigFile,
    chain: String,
    network_datadir: PathBuf,
    /// What was left out, and why.
    notes: Vec<String>,
}

impl Resolved {
    fn settings(&self) -> Settings<'_> {
        Settings {
            cmd: &self.cmd.entries,
            rw: self.rw.as_ref(),
            conf: self.conf.as_ref(),
        }
    }
}

/// The command-line errors Bitcoin's `ParseParameters` stops at that are known here, in the
/// order it meets them.
fn check_command_line(
    reader: Reader,
    args: &[String],
    cmd: &CmdLine,
) -> Result<(), BitcoinArgsError> {
    if !matches!(reader, Reader::Node | Reader::Cli) {
        return Ok(());
    }
    for (index, arg) in args.iter().enumerate().take(cmd.end) {
        if cmd.dotted.contains(&index) {
            return Err(BitcoinArgsError::InvalidParameter(arg.clone()));
        }
        let Some(e) = cmd.entries.iter().find(|e| e.index == index) else {
            continue;
        };
        if e.name == "datadir" && e.negated() {
            return Err(BitcoinArgsError::NegatedDatadir);
        }
        if e.name == "includeconf" && reader == Reader::Cli {
            return Err(BitcoinArgsError::InvalidParameter(arg.clone()));
        }
    }
    // Checked after all arguments are parsed: only a final negation is allowed.
    if reader == Reader::Node
        && let Some(last) = cmd.entries.iter().rev().find(|e| e.name == "includeconf")
        && !last.value.is_false()
    {
        return Err(BitcoinArgsError::IncludeConfOnCommandLine(
            last.value.quoted(),
        ));
    }
    Ok(())
}

/// Whether `a` and `b` are the same file (`fs::equivalent`).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::metadata(a), fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (fs::canonicalize(a), fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Bitcoin's startup order: command-line checks, command-line datadir, config files, chain,
/// final datadir, the ignored-config check and the settings file (nodes only).
///
/// A file that cannot be read or parsed is left out with a note (the program will say what is
/// wrong with it itself).
fn resolve(
    os: Os,
    args: &[String],
    env: &Env,
    reader: Reader,
) -> Result<Resolved, BitcoinArgsError> {
    let cmd = parse_command_line(args, os);
    check_command_line(reader, args, &cmd)?;
    let cmd_settings = Settings {
        cmd: &cmd.entries,
        rw: None,
        conf: None,
    };
    let base = datadir(&cmd_settings, None, os, env)?;
    let mut notes = Vec::new();
    let read = if reader == Reader::CommandLine {
        ConfRead {
            config: None,
            file: ConfigFile::NotConsulted,
            problem: None,
        }
    } else {
        read_config(reader, &cmd, &base)?
    };
    let ConfRead {
        mut config,
        file: config_file,
        problem,
    } = read;
    if let Some(e) = problem {
        notes.push(format!(
            "{e}; planned from the command line alone (the program will report this itself)"
        ));
        // The node and the cli stop at it; the wrapper goes on with what it read.
        if reader != Reader::Wrapper {
            config = None;
        }
    }
    let settings = Settings {
        cmd: &cmd.entries,
        rw: None,
        conf: config.as_ref(),
    };
    if reader == Reader::Wrapper {
        // The wrapper only needs the chain's name to pick the config sections.
        let chain = chain_name(&settings)?;
        return Ok(Resolved {
            cmd,
            conf: config,
            rw: None,
            config_file,
            network_datadir: base,
            chain,
            notes,
        });
    }
    // Before the chain is known, a datadir= at the config's top level must exist (observed:
    // even when the chain's section sets another one that does).
    if config.is_some()
        && let Some(path) = datadir_arg(&settings, None, env)
        && !path.is_dir()
    {
        return Err(BitcoinArgsError::DatadirMissing(path));
    }
    let chain = chain(&settings)?;
    // The config file may move the datadir (datadir=, top level or the chain's section). One
    // only in the chain's section that does not exist makes the node abort (observed: an
    // assertion failure).
    let datadir = datadir(&settings, Some(&chain), os, env)?;
    let subdir = chain_subdir(&chain);
    let network_datadir = if subdir.is_empty() {
        datadir.clone()
    } else {
        datadir.join(subdir)
    };
    let mut rw = None;
    if reader == Reader::Node {
        // A bitcoin.conf in the final datadir that is not the config in use is an error
        // (observed, with -conf elsewhere or a datadir= in the config), unless allowed.
        if let ConfigFile::Read(used) = &config_file {
            let there = datadir.join("bitcoin.conf");
            let allowed = settings
                .get("allowignoredconf", Some(&chain), false)
                .is_some_and(|v| v.as_bool());
            if there.exists() && !same_file(used, &there) && !allowed {
                return Err(BitcoinArgsError::IgnoredConfig {
                    datadir,
                    used: used.clone(),
                });
            }
        }
        // settings.json in the network datadir, or -settings (relative to it); -nosettings
        // turns it off, -settings= is the default and -settings=0 a file named "0".
        if settings.get("settings", Some(&chain), false) != Some(Value::False) {
            let name = settings
                .get_nonempty("settings", Some(&chain))
                .unwrap_or_else(|| "settings.json".to_string());
            match read_settings(&in_new_dir(&network_datadir, &name)) {
                Ok(found) => rw = found,
                Err(e) => notes.push(format!(
                    "{e}; planned without the settings file (the program will report this itself)"
                )),
            }
        }
    }
    Ok(Resolved {
        cmd,
        conf: config,
        rw,
        config_file,
        chain,
        network_datadir,
        notes,
    })
}

/// `ParseAddress` for `unix` addresses: `unix` / `unix:` is `<netdir>/<stem>.sock`, `unix:<path>`
/// is `<netdir>/<path>` (an absolute path replaces netdir). `None` for anything else.
fn unix_address_path(address: &str, netdir: &Path, stem: &str) -> Option<PathBuf> {
    if address == "unix" || address == "unix:" {
        Some(netdir.join(format!("{stem}.sock")))
    } else {
        address.strip_prefix("unix:").map(|p| netdir.join(p))
    }
}

fn fits_sun_path(path: &Path) -> bool {
    path.as_os_str().len() < SUN_PATH_LEN
}

fn check_path_len(option: &'static str, path: PathBuf) -> Result<PathBuf, BitcoinArgsError> {
    if fits_sun_path(&path) {
        Ok(path)
    } else {
        Err(BitcoinArgsError::PathTooLong { option, path })
    }
}

#[cfg(unix)]
fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(not(unix))]
fn is_socket(path: &Path) -> bool {
    path.exists()
}

fn plan_for(
    os: Os,
    program: &str,
    args: &[String],
    env: &Env,
    add_default_bind: bool,
) -> Result<Plan, BitcoinArgsError> {
    let role = role(program);
    // Only Bitcoin Core's own programs read Bitcoin's files by Bitcoin's rules.
    let reader = match role {
        Role::Node => Reader::Node,
        Role::Cli => Reader::Cli,
        Role::Other => Reader::CommandLine,
    };
    let r = resolve(os, args, env, reader)?;
    // bitcoin-node and bitcoind take no positional arguments; they check after reading the
    // config (so a config problem is reported first). The GUIs take a payment URI there.
    if matches!(exe_name(program).as_str(), "bitcoin-node" | "bitcoind")
        && let Some(token) = args
            .iter()
            .find(|a| !(a.starts_with('-') || (os == Os::Windows && a.starts_with('/'))))
    {
        return Err(BitcoinArgsError::UnexpectedToken(token.clone()));
    }
    let settings = r.settings();
    let network = Some(r.chain.as_str());
    let netdir = &r.network_datadir;
    let mut binds = Vec::new();
    let mut connect = None;
    match role {
        Role::Node | Role::Other => {
            if let Some(stem) = listener_stem(program) {
                let stem = stem.as_str();
                let values = settings.get_strings("ipcbind", network).map_err(|kind| {
                    BitcoinArgsError::SettingsValue {
                        path: r.rw.as_ref().map(|s| s.path.clone()).unwrap_or_default(),
                        name: "ipcbind",
                        kind,
                    }
                })?;
                for (address, src) in values {
                    let path = unix_address_path(&address, netdir, stem).ok_or(
                        BitcoinArgsError::UnrecognizedAddress {
                            option: "-ipcbind",
                            address,
                        },
                    )?;
                    let (arg_index, origin) = match src {
                        Src::Cmd(i) => (Some(i), BindOrigin::CommandLine),
                        Src::Settings => (
                            None,
                            BindOrigin::SettingsFile {
                                file: r.rw.as_ref().map(|s| s.path.clone()).unwrap_or_default(),
                            },
                        ),
                        Src::Conf { file, line } => (
                            None,
                            BindOrigin::ConfigFile {
                                file: r
                                    .conf
                                    .as_ref()
                                    .and_then(|c| c.files.get(file).cloned())
                                    .unwrap_or_default(),
                                line,
                            },
                        ),
                    };
                    binds.push(BindSpec {
                        path: check_path_len("-ipcbind", path)?,
                        arg_index,
                        origin,
                    });
                }
                if role == Role::Node
                    && binds.is_empty()
                    && add_default_bind
                    && !settings.is_set("ipcbind", network)
                {
                    binds.push(BindSpec {
                        path: check_path_len("-ipcbind", netdir.join(format!("{stem}.sock")))?,
                        arg_index: None,
                        origin: BindOrigin::Added,
                    });
                }
            }
        }
        Role::Cli => {}
    }
    // bitcoin-cli connects by default (`auto`); other programs only when told to.
    let explicit_connect = args.iter().any(|a| {
        let a = a.trim_start_matches('-');
        a.starts_with("ipcconnect=") && a != "ipcconnect=auto"
    });
    if role == Role::Cli || (role == Role::Other && explicit_connect) {
        connect = cli_connect(&settings, network, netdir)?;
    }
    Ok(Plan {
        binds,
        connect,
        network_datadir: r.network_datadir.clone(),
        chain: r.chain.clone(),
        config: r.config_file.clone(),
        included: r
            .conf
            .as_ref()
            .map(|c| c.files[1..].to_vec())
            .unwrap_or_default(),
        settings: r.rw.as_ref().map(|s| s.path.clone()),
        notes: r.notes.clone(),
    })
}

/// `bitcoin-cli`'s `CallIPC` + `connectAddress`.
fn cli_connect(
    settings: &Settings<'_>,
    network: Option<&str>,
    netdir: &Path,
) -> Result<Option<PathBuf>, BitcoinArgsError> {
    let address = settings
        .get("ipcconnect", network, false)
        .map_or_else(|| "auto".to_string(), |v| v.to_arg_string());
    if address.is_empty() || address == "0" {
        return Ok(None);
    }
    // With -rpcconnect the cli uses HTTP (auto) or refuses to run (explicit): no IPC either way.
    if settings
        .get("rpcconnect", network, false)
        .is_some_and(|v| !v.is_false())
    {
        return Ok(None);
    }
    if address == "auto" {
        let path = netdir.join("node.sock");
        return Ok((is_socket(&path) && fits_sun_path(&path)).then_some(path));
    }
    let path = unix_address_path(&address, netdir, "node").ok_or(
        BitcoinArgsError::UnrecognizedAddress {
            option: "-ipcconnect",
            address,
        },
    )?;
    check_path_len("-ipcconnect", path).map(Some)
}

fn wrapper_target_impl(
    args: &[String],
    wrapper_path: &Path,
    env_path: Option<&OsStr>,
    env: Option<&Env>,
) -> Option<(PathBuf, Vec<String>)> {
    let mut multiprocess = None;
    let mut command = None;
    let mut rest = Vec::new();
    for arg in args {
        if command.is_some() {
            rest.push(arg.clone());
            continue;
        }
        match arg.as_str() {
            "-m" | "--multiprocess" => multiprocess = Some(true),
            "-M" | "--monolithic" => multiprocess = Some(false),
            "-v" | "--version" | "-h" | "--help" | "help" => return None,
            "" => {}
            a if a.starts_with('-') => return None, // "Unknown option"
            a => command = Some(a),
        }
    }
    // Only `node` and `gui` look at the target's options (observed: `bitcoin rpc` with a
    // missing -datadir or conflicting chains just runs bitcoin-cli).
    let use_multiprocess = || match multiprocess {
        Some(m) => Some(m),
        None => wrapper_wants_multiprocess(&rest, env),
    };
    let (exe, prefix): (&str, Option<&str>) = match command? {
        "node" if use_multiprocess()? => ("bitcoin-node", None),
        "node" => ("bitcoind", None),
        "gui" if use_multiprocess()? => ("bitcoin-gui", None),
        "gui" => ("bitcoin-qt", None),
        "rpc" => ("bitcoin-cli", Some("-named")),
        "wallet" => ("bitcoin-wallet", None),
        "tx" => ("bitcoin-tx", None),
        "util" => ("bitcoin-util", None),
        _ => return None,
    };
    let program = locate_target(exe, wrapper_path, env_path)?;
    let mut target_args: Vec<String> = prefix.map(str::to_string).into_iter().collect();
    target_args.extend(rest);
    Some((program, target_args))
}

/// The wrapper's `UseMultiprocess` without `-m`/`-M`: any `ipc*` option set, in the target's
/// arguments or (with `env`) its config and included files. `None` when the wrapper itself
/// stops: conflicting chains (its own error), a missing `-datadir` or an `-includeconf` on the
/// command line with a config file present (observed: assertion failures). A config it cannot
/// read it warns about and goes on with what it has.
fn wrapper_wants_multiprocess(args: &[String], env: Option<&Env>) -> Option<bool> {
    const IPC: [&str; 3] = ["ipcbind", "ipcconnect", "ipcfd"];
    let Some(env) = env else {
        let cmd = parse_command_line(args, Os::CURRENT);
        return Some(IPC.iter().any(|n| cmd.entries.iter().any(|e| e.name == *n)));
    };
    let r = resolve(Os::CURRENT, args, env, Reader::Wrapper).ok()?;
    let settings = r.settings();
    Some(IPC.iter().any(|n| settings.is_set(n, Some(&r.chain))))
}

fn is_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    is_file(path)
}

/// The first `dir/name` along `env_path` that `accept`s.
fn search_path(name: &Path, env_path: &OsStr, accept: fn(&Path) -> bool) -> Option<PathBuf> {
    std::env::split_paths(env_path)
        .map(|dir| dir.join(name))
        .find(|c| accept(c))
}

/// The wrapper's `ExecCommand` lookup, with "exists" standing in for "execvp did not fail with
/// ENOENT".
fn locate_target(exe: &str, wrapper_path: &Path, env_path: Option<&OsStr>) -> Option<PathBuf> {
    let exe_file = PathBuf::from(format!("{exe}{}", std::env::consts::EXE_SUFFIX));
    let bare = wrapper_path
        .parent()
        .is_none_or(|p| p.as_os_str().is_empty());
    // GetExePath: a bare argv0 was found along $PATH.
    let mut wrapper = wrapper_path.to_path_buf();
    if bare && let Some(found) = env_path.and_then(|p| search_path(wrapper_path, p, is_file)) {
        wrapper = found;
    }
    // weakly_canonical: resolve symlinks (or at least make it absolute).
    let real = fs::canonicalize(&wrapper)
        .or_else(|_| std::path::absolute(&wrapper))
        .unwrap_or(wrapper);
    let dir = real.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name() == Some(OsStr::new("bin"))
        && let Some(root) = dir.parent()
    {
        let candidate = root.join("libexec").join(&exe_file);
        if is_file(&candidate) {
            return Some(candidate);
        }
    }
    if !dir.as_os_str().is_empty() {
        if cfg!(windows) {
            let candidate = dir.join("daemon").join(&exe_file);
            if is_file(&candidate) {
                return Some(candidate);
            }
        }
        let candidate = dir.join(&exe_file);
        if is_file(&candidate) {
            return Some(candidate);
        }
    }
    if !bare {
        // Started by path: the wrapper does not search $PATH (it fails instead).
        return None;
    }
    // execvp's own search; glibc's default when $PATH is unset.
    let default_path = OsStr::new("/bin:/usr/bin");
    search_path(&exe_file, env_path.unwrap_or(default_path), is_executable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `path`, absolute on unix already, as the tests' environments make it absolute: joined to
    /// their working directory, which is under the temp dir (Windows adds that drive).
    pub(super) fn abs(path: &str) -> PathBuf {
        std::env::temp_dir().join(path)
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("mpspy-btc-{}-{tag}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        /// An environment whose home is `<tmp>/home` and whose cwd is `<tmp>`.
        fn env(&self) -> Env {
            Env {
                home: Some(self.0.join("home")),
                cwd: self.0.clone(),
                local_app_data: None,
                app_data: None,
            }
        }

        /// The default datadir of [`Self::env`] (created).
        fn datadir(&self) -> PathBuf {
            let d = self.0.join("home/.bitcoin");
            fs::create_dir_all(&d).unwrap();
            d
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn node(a: &[&str], env: &Env) -> Plan {
        plan_for(Os::Unix, "bitcoin-node", &args(a), env, false).unwrap()
    }

    fn bind_paths(p: &Plan) -> Vec<PathBuf> {
        p.binds.iter().map(|b| b.path.clone()).collect()
    }

    fn err(program: &str, a: &[&str], env: &Env) -> BitcoinArgsError {
        plan_for(Os::Unix, program, &args(a), env, false).unwrap_err()
    }

    #[test]
    fn roles_by_file_name() {
        assert_eq!(role("bitcoin-node"), Role::Node);
        assert_eq!(role("/opt/bitcoin/libexec/bitcoin-node"), Role::Node);
        assert_eq!(role("./Bitcoin-GUI.EXE"), Role::Node);
        assert_eq!(role("bitcoind"), Role::Node);
        assert_eq!(role("bitcoin-qt"), Role::Node);
        assert_eq!(role("/usr/bin/bitcoin-cli"), Role::Cli);
        assert_eq!(role("BITCOIN-CLI.exe"), Role::Cli);
        assert_eq!(role("bitcoin-wallet"), Role::Other);
        assert_eq!(role("bitcoin"), Role::Other);
        assert_eq!(role("sv2-tp"), Role::Other);
        assert_eq!(role("/bitcoin-node/x"), Role::Other);
    }

    #[test]
    fn default_paths_per_chain() {
        let t = TempDir::new("chains");
        let env = t.env();
        let d = t.datadir();
        for (a, chain, sock) in [
            (&[][..], "main", d.join("node.sock")),
            (&["-testnet"][..], "test", d.join("testnet3/node.sock")),
            (&["-testnet4"][..], "testnet4", d.join("testnet4/node.sock")),
            (&["-signet"][..], "signet", d.join("signet/node.sock")),
            (&["-regtest"][..], "regtest", d.join("regtest/node.sock")),
            (&["-chain=main"][..], "main", d.join("node.sock")),
            (&["-chain=test"][..], "test", d.join("testnet3/node.sock")),
            (
                &["-chain=testnet4"][..],
                "testnet4",
                d.join("testnet4/node.sock"),
            ),
            (&["-chain=signet"][..], "signet", d.join("signet/node.sock")),
            (
                &["--chain=regtest"][..],
                "regtest",
                d.join("regtest/node.sock"),
            ),
        ] {
            let mut a = a.to_vec();
            a.push("-ipcbind=unix");
            let p = node(&a, &env);
            assert_eq!(p.chain, chain, "{a:?}");
            assert_eq!(bind_paths(&p), vec![sock.clone()], "{a:?}");
            assert_eq!(p.network_datadir, sock.parent().unwrap(), "{a:?}");
            assert_eq!(p.binds[0].arg_index, Some(a.len() - 1));
            assert_eq!(p.binds[0].origin, BindOrigin::CommandLine);
            assert_eq!(p.connect, None);
        }
    }

    #[test]
    fn default_datadir_per_os() {
        let t = TempDir::new("os");
        let mut env = t.env();
        let home = env.home.clone().unwrap();
        assert_eq!(default_datadir(Os::Unix, &env), home.join(".bitcoin"));
        assert_eq!(
            default_datadir(Os::Mac, &env),
            home.join("Library/Application Support/Bitcoin")
        );
        env.home = None;
        assert_eq!(default_datadir(Os::Unix, &env), PathBuf::from("/.bitcoin"));
        env.home = Some(PathBuf::new());
        assert_eq!(default_datadir(Os::Unix, &env), PathBuf::from("/.bitcoin"));

        env.local_app_data = Some(t.path().join("Local"));
        env.app_data = Some(t.path().join("Roaming"));
        assert_eq!(
            default_datadir(Os::Windows, &env),
            t.path().join("Local/Bitcoin")
        );
        fs::create_dir_all(t.path().join("Roaming/Bitcoin")).unwrap();
        assert_eq!(
            default_datadir(Os::Windows, &env),
            t.path().join("Roaming/Bitcoin")
        );
    }

    #[test]
    fn chain_conflicts() {
        let t = TempDir::new("conflict");
        let env = t.env();
        for a in [
            &["-regtest", "-testnet"][..],
            &["-signet", "-testnet4"][..],
            &["-chain=regtest", "-regtest"][..],
            &["-chain=main", "-testnet"][..],
        ] {
            let e = err("bitcoin-node", a, &env);
            assert!(matches!(e, BitcoinArgsError::ChainConflict), "{a:?}");
            assert_eq!(
                e.to_string(),
                "Invalid combination of -regtest, -signet, -testnet, -testnet4 and -chain. Can use at most one."
            );
        }
        // Negated or false flags do not count; the last occurrence wins.
        assert_eq!(
            node(&["-regtest", "-noregtest", "-testnet"], &env).chain,
            "test"
        );
        assert_eq!(node(&["-regtest=0", "-signet"], &env).chain, "signet");
        assert_eq!(
            node(&["-testnet", "-testnet=0", "-chain=regtest"], &env).chain,
            "regtest"
        );
        // A double negative is true.
        assert_eq!(node(&["-noregtest=0"], &env).chain, "regtest");
        // The last -chain wins.
        assert_eq!(
            node(&["-chain=signet", "-chain=regtest"], &env).chain,
            "regtest"
        );
        let e = err("bitcoin-node", &["-chain=bogus"], &env);
        assert!(matches!(&e, BitcoinArgsError::UnknownChain(c) if c == "bogus"));
        assert!(e.to_string().contains("'bogus'"), "{e}");
    }

    #[test]
    fn bind_addresses() {
        let t = TempDir::new("addr");
        let env = t.env();
        let d = t.datadir();
        let p = node(
            &[
                "-regtest",
                "-ipcbind=unix:rel/x.sock",
                "-ipcbind=unix:/abs/y.sock",
                "-ipcbind=unix:",
                "-ipcbind=unix:../up.sock",
            ],
            &env,
        );
        assert_eq!(
            bind_paths(&p),
            vec![
                d.join("regtest/rel/x.sock"),
                abs("/abs/y.sock"),
                d.join("regtest/node.sock"),
                d.join("regtest/../up.sock"),
            ]
        );
        let idx: Vec<_> = p.binds.iter().map(|b| b.arg_index).collect();
        assert_eq!(idx, vec![Some(1), Some(2), Some(3), Some(4)]);

        // bitcoin-gui listens on gui.sock.
        let p = plan_for(
            Os::Unix,
            "/x/bitcoin-gui",
            &args(&["-ipcbind=unix"]),
            &env,
            false,
        )
        .unwrap();
        assert_eq!(bind_paths(&p), vec![d.join("gui.sock")]);

        for (a, addr) in [
            ("-ipcbind=tcp:1", "tcp:1"),
            ("-ipcbind", ""),
            ("-ipcbind=unixx", "unixx"),
        ] {
            let e = err("bitcoin-node", &[a], &env);
            assert!(
                matches!(&e, BitcoinArgsError::UnrecognizedAddress { option: "-ipcbind", address } if address == addr),
                "{a}: {e:?}"
            );
            assert_eq!(
                e.to_string(),
                format!("-ipcbind: Unrecognized address '{addr}'")
            );
        }

        let long = format!("-ipcbind=unix:/{}", "x".repeat(120));
        let e = err("bitcoin-node", &[&long], &env);
        assert!(matches!(e, BitcoinArgsError::PathTooLong { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("exceeded maximum socket path length")
        );
    }

    #[test]
    fn repeated_and_negated_binds() {
        let t = TempDir::new("neg");
        let env = t.env();
        let d = t.datadir();
        let p = node(
            &["-ipcbind=unix:a", "-ipcbind=unix:b", "-ipcbind=unix:a"],
            &env,
        );
        assert_eq!(bind_paths(&p), vec![d.join("a"), d.join("b"), d.join("a")]);

        // -noipcbind drops what came before it.
        let p = node(&["-ipcbind=unix:a", "-noipcbind", "-ipcbind=unix:b"], &env);
        assert_eq!(bind_paths(&p), vec![d.join("b")]);
        assert_eq!(p.binds[0].arg_index, Some(2));

        let a = args(&["-ipcbind=unix", "-noipcbind"]);
        let p = plan_for(Os::Unix, "bitcoin-node", &a, &env, true).unwrap();
        assert!(
            p.binds.is_empty(),
            "an explicit -noipcbind also stops the default bind"
        );
    }

    #[test]
    fn default_bind_only_when_asked_and_possible() {
        let t = TempDir::new("dflt");
        let env = t.env();
        let d = t.datadir();
        let a = args(&["-regtest"]);
        let p = plan_for(Os::Unix, "bitcoin-node", &a, &env, true).unwrap();
        assert_eq!(bind_paths(&p), vec![d.join("regtest/node.sock")]);
        assert_eq!(p.binds[0].arg_index, None);
        assert_eq!(p.binds[0].origin, BindOrigin::Added);

        let p = plan_for(Os::Unix, "bitcoin-gui", &a, &env, true).unwrap();
        assert_eq!(bind_paths(&p), vec![d.join("regtest/gui.sock")]);

        assert!(node(&["-regtest"], &env).binds.is_empty());
        for program in ["bitcoind", "bitcoin-qt", "bitcoin-cli", "bitcoin-wallet"] {
            let p = plan_for(Os::Unix, program, &a, &env, true).unwrap();
            assert!(p.binds.is_empty(), "{program}");
        }
        // bitcoind rejects -ipcbind itself: it is not planned (and left for it to refuse).
        let p = plan_for(Os::Unix, "bitcoind", &args(&["-ipcbind=unix"]), &env, true).unwrap();
        assert!(p.binds.is_empty());
    }

    #[test]
    fn config_binds_sections_and_prefixes() {
        let t = TempDir::new("conf");
        let env = t.env();
        let d = t.datadir();
        let conf = t.write(
            "home/.bitcoin/bitcoin.conf",
            "# a comment\n\
             regtest=1\n\
             ipcbind=unix:top.sock   # trailing comment\n\
             main.ipcbind=unix:main-only.sock\n\
             test.ipcbind=unix:test-only.sock\n\
             regtest.ipcbind=unix:prefixed.sock\n\
             \n\
             [regtest]\n\
             ipcbind = unix:section.sock\n\
             [main]\n\
             ipcbind=unix:main-section.sock\n",
        );
        let p = node(&[], &env);
        assert_eq!(p.chain, "regtest");
        let r = d.join("regtest");
        // The chain's section first (file order), then the top level.
        assert_eq!(
            bind_paths(&p),
            vec![
                r.join("prefixed.sock"),
                r.join("section.sock"),
                r.join("top.sock")
            ]
        );
        assert!(p.binds.iter().all(|b| b.arg_index.is_none()));
        assert_eq!(
            p.binds[0].origin,
            BindOrigin::ConfigFile {
                file: conf.clone(),
                line: 6
            }
        );
        assert_eq!(
            p.binds[2].origin,
            BindOrigin::ConfigFile {
                file: conf.clone(),
                line: 3
            }
        );

        // Config binds count as "given": no default bind on top.
        let p = plan_for(Os::Unix, "bitcoin-node", &[], &env, true).unwrap();
        assert_eq!(p.binds.len(), 3);

        // The command line picks another chain: -regtest=0 is needed to leave regtest.
        let e = err("bitcoin-node", &["-signet"], &env);
        assert!(matches!(e, BitcoinArgsError::ChainConflict));
        let p = node(&["-regtest=0", "-chain=main"], &env);
        assert_eq!(p.chain, "main");
        assert_eq!(
            bind_paths(&p),
            vec![
                d.join("main-only.sock"),
                d.join("main-section.sock"),
                d.join("top.sock")
            ]
        );
    }

    #[test]
    fn command_line_and_config_binds_combine_like_bitcoin() {
        let t = TempDir::new("merge");
        let env = t.env();
        let d = t.datadir();
        t.write("home/.bitcoin/bitcoin.conf", "ipcbind=unix:conf.sock\n");
        // Bitcoin adds the config's values to the command line's.
        let p = node(&["-ipcbind=unix:cmd.sock"], &env);
        assert_eq!(
            bind_paths(&p),
            vec![d.join("cmd.sock"), d.join("conf.sock")]
        );
        assert_eq!(p.binds[0].origin, BindOrigin::CommandLine);
        assert!(matches!(
            p.binds[1].origin,
            BindOrigin::ConfigFile { line: 1, .. }
        ));
        // A final -noipcbind discards the config's too.
        assert!(node(&["-noipcbind"], &env).binds.is_empty());
        // A negation followed by a value brings the config's back ("zombie" values).
        let p = node(&["-ipcbind=unix:x", "-noipcbind", "-ipcbind=unix:y"], &env);
        assert_eq!(bind_paths(&p), vec![d.join("y"), d.join("conf.sock")]);
        // A negation inside the config file only affects the config's own values.
        t.write(
            "home/.bitcoin/bitcoin.conf",
            "ipcbind=unix:old.sock\nnoipcbind=1\nipcbind=unix:new.sock\n",
        );
        let p = node(&["-ipcbind=unix:cmd.sock"], &env);
        assert_eq!(bind_paths(&p), vec![d.join("cmd.sock"), d.join("new.sock")]);
    }

    #[test]
    fn command_line_overrides_config_for_single_values() {
        let t = TempDir::new("override");
        let env = t.env();
        let d = t.datadir();
        let other = t.path().join("other");
        fs::create_dir_all(&other).unwrap();
        t.write(
            "home/.bitcoin/bitcoin.conf",
            &format!("chain=regtest\ndatadir={}\n", other.display()),
        );
        // From the config: chain and datadir.
        let p = node(&["-ipcbind=unix"], &env);
        assert_eq!(p.chain, "regtest");
        assert_eq!(bind_paths(&p), vec![other.join("regtest/node.sock")]);
        // The command line wins.
        let p = node(&["-chain=signet", "-ipcbind=unix"], &env);
        assert_eq!(p.chain, "signet");
        assert_eq!(p.network_datadir, other.join("signet"));
        // -datadir on the command line also decides where bitcoin.conf is (none there).
        let plain = t.path().join("plain");
        fs::create_dir_all(&plain).unwrap();
        let p = node(
            &[&format!("-datadir={}", plain.display()), "-ipcbind=unix"],
            &env,
        );
        assert_eq!(p.chain, "main");
        assert_eq!(bind_paths(&p), vec![plain.join("node.sock")]);
        // -noconf: no config at all.
        let p = node(&["-noconf"], &env);
        assert_eq!((p.chain.as_str(), p.network_datadir), ("main", d));
    }

    #[test]
    fn conf_location_and_errors() {
        let t = TempDir::new("confloc");
        let env = t.env();
        let dd = t.path().join("dd");
        fs::create_dir_all(&dd).unwrap();
        // -conf is relative to the datadir, not the network datadir.
        t.write("dd/my.conf", "[regtest]\nipcbind=unix:from-my.sock\n");
        let datadir_arg = format!("-datadir={}", dd.display());
        let p = node(&[&datadir_arg, "-regtest", "-conf=my.conf"], &env);
        assert_eq!(bind_paths(&p), vec![dd.join("regtest/from-my.sock")]);
        // An absolute -conf.
        let abs = t.write("elsewhere/x.conf", "regtest=1\nipcbind=unix\n");
        let p = node(&[&format!("-conf={}", abs.display())], &env);
        assert_eq!(bind_paths(&p), vec![t.datadir().join("regtest/node.sock")]);

        // A missing explicit -conf is the program's error; mpspy notes it and plans from the
        // command line alone. A missing default one is fine.
        let only_note = |a: &[&str]| {
            let p = plan_for(Os::Unix, "bitcoin-node", &args(a), &env, false).unwrap();
            assert_eq!(p.notes.len(), 1, "{p:?}");
            (p.notes[0].clone(), bind_paths(&p))
        };
        let (msg, binds) = only_note(&[
            &datadir_arg,
            "-regtest",
            "-conf=missing.conf",
            "-ipcbind=unix:cmd.sock",
        ]);
        assert!(
            msg.starts_with(&format!(
                "-conf: cannot read {}: ",
                dd.join("missing.conf").display()
            )),
            "{msg}"
        );
        assert!(
            msg.ends_with("the program will report this itself)"),
            "{msg}"
        );
        assert_eq!(
            binds,
            vec![dd.join("regtest/cmd.sock")],
            "the command line still counts"
        );
        let p = node(&[&datadir_arg], &env);
        assert!(p.binds.is_empty() && p.notes.is_empty(), "{p:?}");

        let (msg, _) = only_note(&[&format!("-conf={}", dd.display())]);
        assert!(
            msg.starts_with("-conf: ") && msg.contains("is a directory"),
            "{msg}"
        );
        // The default bitcoin.conf a directory: the same.
        fs::create_dir_all(dd.join("bitcoin.conf")).unwrap();
        let (msg, _) = only_note(&[&datadir_arg]);
        assert!(msg.contains("is a directory"), "{msg}");

        // Malformed config files: noted as Bitcoin would refuse them.
        t.write("dd/bad1.conf", "regtest=1\n-ipcbind=unix\n");
        let (msg, _) = only_note(&[&datadir_arg, "-conf=bad1.conf"]);
        assert!(msg.contains("parse error on line 2"), "{msg}");
        t.write("dd/bad2.conf", "noregtest\n");
        let (msg, _) = only_note(&[&datadir_arg, "-conf=bad2.conf"]);
        assert!(msg.contains("use noregtest=1 instead"), "{msg}");
        t.write("dd/bad3.conf", "conf=other.conf\n");
        let (msg, _) = only_note(&[&datadir_arg, "-conf=bad3.conf"]);
        assert!(
            msg.contains("conf cannot be set in the configuration file"),
            "{msg}"
        );
    }

    #[test]
    fn datadir_must_exist_and_is_made_absolute() {
        let t = TempDir::new("datadir");
        let env = t.env();
        let e = err("bitcoin-node", &["-datadir=/nonexistent/mpspy-test"], &env);
        assert!(matches!(e, BitcoinArgsError::DatadirMissing(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "-datadir: directory {} does not exist",
                // In the message as the OS spells it (Windows: backslashes only).
                std::path::absolute(abs("/nonexistent/mpspy-test"))
                    .unwrap()
                    .display()
            )
        );
        let e = err("bitcoin-cli", &["-datadir=rel-missing"], &env);
        assert_eq!(
            e.to_string(),
            format!(
                "-datadir: directory {} does not exist",
                t.path().join("rel-missing").display()
            )
        );

        fs::create_dir_all(t.path().join("rel")).unwrap();
        let p = node(&["-datadir=rel/", "-regtest", "-ipcbind=unix"], &env);
        assert_eq!(p.network_datadir, t.path().join("rel/regtest"));
        assert_eq!(bind_paths(&p), vec![t.path().join("rel/regtest/node.sock")]);
        // An empty -datadir is the default.
        let p = node(&["-datadir="], &env);
        assert_eq!(p.network_datadir, t.path().join("home/.bitcoin"));
        // A datadir from the config must exist too.
        t.write(
            "home/.bitcoin/bitcoin.conf",
            "datadir=/nonexistent/mpspy-conf\n",
        );
        let e = err("bitcoin-node", &[], &env);
        assert!(matches!(e, BitcoinArgsError::DatadirMissing(_)), "{e:?}");
    }

    fn cli(a: &[&str], env: &Env) -> Plan {
        plan_for(Os::Unix, "bitcoin-cli", &args(a), env, true).unwrap()
    }

    #[cfg(unix)]
    #[test]
    fn cli_auto_connects_only_to_an_existing_socket() {
        let t = TempDir::new("cliauto");
        let env = t.env();
        let d = t.datadir();
        let p = cli(&["-regtest", "getblockcount"], &env);
        assert_eq!(p.connect, None);
        assert!(p.binds.is_empty());
        // A plain file is not a socket.
        t.write("home/.bitcoin/regtest/node.sock", "");
        assert_eq!(cli(&["-regtest", "getblockcount"], &env).connect, None);
        fs::remove_file(d.join("regtest/node.sock")).unwrap();

        let sock = d.join("regtest/node.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(
            cli(&["-regtest", "getblockcount"], &env).connect,
            Some(sock.clone())
        );
        assert_eq!(
            cli(&["-regtest", "-ipcconnect=auto", "getblockcount"], &env).connect,
            Some(sock.clone())
        );
        // Not for another chain, and not when IPC is off or -rpcconnect is given.
        assert_eq!(cli(&["getblockcount"], &env).connect, None);
        assert_eq!(
            cli(&["-regtest", "-noipcconnect", "getblockcount"], &env).connect,
            None
        );
        assert_eq!(
            cli(&["-regtest", "-ipcconnect=0", "getblockcount"], &env).connect,
            None
        );
        assert_eq!(
            cli(&["-regtest", "-ipcconnect", "getblockcount"], &env).connect,
            None
        );
        assert_eq!(
            cli(
                &["-regtest", "-rpcconnect=127.0.0.1", "getblockcount"],
                &env
            )
            .connect,
            None
        );
        assert_eq!(
            cli(
                &[
                    "-regtest",
                    "-rpcconnect=1",
                    "-norpcconnect",
                    "getblockcount"
                ],
                &env
            )
            .connect,
            Some(sock.clone())
        );
    }

    #[test]
    fn cli_explicit_connect() {
        let t = TempDir::new("cliexp");
        let env = t.env();
        let d = t.datadir();
        // unix: the default path even if nothing is there (the cli would fail, not fall back).
        assert_eq!(
            cli(&["-ipcconnect=unix", "getblockcount"], &env).connect,
            Some(d.join("node.sock"))
        );
        assert_eq!(
            cli(
                &["-regtest", "-ipcconnect=unix:rel.sock", "getblockcount"],
                &env
            )
            .connect,
            Some(d.join("regtest/rel.sock"))
        );
        assert_eq!(
            cli(&["-ipcconnect=unix:/abs/n.sock", "getblockcount"], &env).connect,
            Some(abs("/abs/n.sock"))
        );
        // The last one wins; a negation turns IPC off.
        assert_eq!(
            cli(&["-ipcconnect=unix:a", "-ipcconnect=unix:b", "x"], &env).connect,
            Some(d.join("b"))
        );
        assert_eq!(
            cli(&["-ipcconnect=unix:a", "-noipcconnect", "x"], &env).connect,
            None
        );
        let e = err("bitcoin-cli", &["-ipcconnect=tcp:1"], &env);
        assert_eq!(e.to_string(), "-ipcconnect: Unrecognized address 'tcp:1'");

        // From the config: the chain's section, first value wins inside the file.
        t.write(
            "home/.bitcoin/bitcoin.conf",
            "[regtest]\nipcconnect=unix:first.sock\nipcconnect=unix:second.sock\n",
        );
        assert_eq!(
            cli(&["-regtest", "x"], &env).connect,
            Some(d.join("regtest/first.sock"))
        );
        assert_eq!(
            cli(&["-regtest", "-ipcconnect=unix:cmd.sock", "x"], &env).connect,
            Some(d.join("regtest/cmd.sock"))
        );
    }

    #[test]
    fn cli_positional_arguments_end_options() {
        let t = TempDir::new("clipos");
        let env = t.env();
        let p = cli(
            &["-regtest", "getblockcount", "-ipcconnect=unix", "-testnet"],
            &env,
        );
        assert_eq!(p.chain, "regtest");
        assert_eq!(p.connect, None);
        let p = cli(&["-named", "echo", "-regtest"], &env);
        assert_eq!(p.chain, "main");
        let cmd = parse_command_line(&args(&["-a", "-", "-b"]), Os::Unix);
        assert_eq!((cmd.entries.len(), cmd.end), (1, 1));
    }

    #[test]
    fn option_syntax() {
        let cmd = parse_command_line(
            &args(&[
                "--regtest",
                "-noipcbind",
                "-nofoo=0",
                "-x=a=b",
                "-bar",
                "-a.b=1",
                "pos",
                "-late",
            ]),
            Os::Unix,
        );
        let got: Vec<_> = cmd
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.clone(), e.index))
            .collect();
        assert_eq!(
            got,
            vec![
                ("regtest", Value::Str(String::new()), 0),
                ("ipcbind", Value::False, 1),
                ("foo", Value::True, 2),
                ("x", Value::Str("a=b".into()), 3),
                ("bar", Value::Str(String::new()), 4),
            ]
        );
        assert_eq!(cmd.end, 6);
        // Windows spellings; macOS's process serial number is skipped.
        let cmd = parse_command_line(&args(&["/RegTest", "-psn_0_123"]), Os::Windows);
        assert_eq!(cmd.entries[0].name, "regtest");
        let cmd = parse_command_line(&args(&["-psn_0_123", "-regtest"]), Os::Mac);
        assert_eq!(cmd.entries.len(), 1);
        for (s, b) in [
            ("", true),
            ("1", true),
            ("0", false),
            ("abc", false),
            ("2x", true),
            ("-1", true),
            (" 0 ", false),
            ("+-1", false),
            ("00", false),
        ] {
            assert_eq!(interpret_bool(s), b, "{s:?}");
        }
    }

    /// Re-plans the rewritten arguments: the program must end up with exactly the private binds.
    #[test]
    fn rewrite_adds_the_default_bind_and_leaves_binds_alone() {
        let t = TempDir::new("rw");
        let env = t.env();
        let d = t.datadir();

        // The program's own binds are not rewritten (mpspy takes them over where they are).
        let a = args(&[
            "-regtest",
            "-ipcbind=unix",
            "-debug=ipc",
            "--ipcbind=unix:x",
        ]);
        let p = plan_for(Os::Unix, "bitcoin-node", &a, &env, true).unwrap();
        assert_eq!(
            bind_paths(&p),
            vec![d.join("regtest/node.sock"), d.join("regtest/x")]
        );
        assert_eq!(rewrite(&a, &p, None), a);

        // The added default bind goes after the options (before any positional argument, which
        // bitcoin-gui takes as a payment URI), as the user would have typed it.
        let a = args(&["-regtest", "-printtoconsole", "bitcoin:x"]);
        let p = plan_for(Os::Unix, "bitcoin-gui", &a, &env, true).unwrap();
        assert_eq!(p.binds[0].origin, BindOrigin::Added);
        let out = rewrite(&a, &p, None);
        assert_eq!(
            out,
            args(&["-regtest", "-printtoconsole", "-ipcbind=unix", "bitcoin:x"])
        );
        let again = plan_for(Os::Unix, "bitcoin-gui", &out, &env, true).unwrap();
        assert_eq!(bind_paths(&again), bind_paths(&p));
        assert_eq!(again.binds[0].origin, BindOrigin::CommandLine);

        // Config-file binds are the program's too: nothing to add.
        t.write(
            "home/.bitcoin/bitcoin.conf",
            "[regtest]\nipcbind=unix:sec.sock\n",
        );
        let a = args(&["-regtest"]);
        let p = plan_for(Os::Unix, "bitcoin-node", &a, &env, true).unwrap();
        assert_eq!(bind_paths(&p), vec![d.join("regtest/sec.sock")]);
        assert!(matches!(
            p.binds[0].origin,
            BindOrigin::ConfigFile { line: 2, .. }
        ));
        assert_eq!(rewrite(&a, &p, None), a);
    }

    #[cfg(unix)]
    #[test]
    fn rewrite_cli_connect() {
        let t = TempDir::new("rwcli");
        let env = t.env();
        let d = t.datadir();
        let private = t.path().join("priv/connect.sock");
        let want = format!("-ipcconnect=unix:{}", private.display());

        // Default auto with a live socket: the option goes before the command.
        fs::create_dir_all(d.join("regtest")).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(d.join("regtest/node.sock")).unwrap();
        let a = args(&["-regtest", "getblockcount", "-x"]);
        let p = cli(&["-regtest", "getblockcount", "-x"], &env);
        let out = rewrite(&a, &p, Some(&private));
        assert_eq!(out, args(&["-regtest", &want, "getblockcount", "-x"]));
        assert_eq!(
            cli(&out.iter().map(String::as_str).collect::<Vec<_>>(), &env).connect,
            Some(private.clone())
        );

        // An explicit value is replaced in place (the last one, which is in force).
        let a = args(&[
            "-ipcconnect=unix:a",
            "-regtest",
            "-ipcconnect=unix",
            "echo",
            "hi",
        ]);
        let p = cli(
            &[
                "-ipcconnect=unix:a",
                "-regtest",
                "-ipcconnect=unix",
                "echo",
                "hi",
            ],
            &env,
        );
        let out = rewrite(&a, &p, Some(&private));
        assert_eq!(
            out,
            args(&["-ipcconnect=unix:a", "-regtest", &want, "echo", "hi"])
        );

        // -noipcconnect: nothing to interpose, nothing changes.
        let a = args(&["-regtest", "-noipcconnect", "echo"]);
        let p = cli(&["-regtest", "-noipcconnect", "echo"], &env);
        assert_eq!(p.connect, None);
        assert_eq!(rewrite(&a, &p, Some(&private)), a);
    }

    /// `<root>/<rel>` as a program file: `.exe` on Windows.
    fn exe(root: &Path, rel: &str) -> PathBuf {
        root.join(format!("{rel}{}", std::env::consts::EXE_SUFFIX))
    }

    /// A fake install: `<root>/bin/bitcoin`, `<root>/bin/bitcoind`, `<root>/libexec/bitcoin-node`.
    fn fake_tree(t: &TempDir) -> PathBuf {
        let root = fs::canonicalize(t.path()).unwrap();
        for f in [
            "bin/bitcoin",
            "bin/bitcoind",
            "bin/bitcoin-cli",
            "bin/bitcoin-qt",
            "bin/bitcoin-wallet",
            "bin/bitcoin-tx",
            "bin/bitcoin-util",
            "libexec/bitcoin-node",
            "libexec/bitcoin-gui",
        ] {
            t.write(
                &format!("{f}{}", std::env::consts::EXE_SUFFIX),
                "#!/bin/sh\n",
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(root.join(f), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        root
    }

    #[test]
    fn wrapper_command_mapping_and_lookup() {
        let t = TempDir::new("wrap");
        let root = fake_tree(&t);
        let wrapper = root.join("bin/bitcoin");
        let w = |a: &[&str]| wrapper_target(&args(a), &wrapper, None);

        assert_eq!(
            w(&["node", "-regtest", "-ipcbind=unix"]),
            Some((
                exe(&root, "libexec/bitcoin-node"),
                args(&["-regtest", "-ipcbind=unix"])
            ))
        );
        assert_eq!(
            w(&["node", "-ipcconnect=unix"]).unwrap().0,
            exe(&root, "libexec/bitcoin-node")
        );
        assert_eq!(
            w(&["node", "-noipcbind"]).unwrap().0,
            exe(&root, "libexec/bitcoin-node")
        );
        assert_eq!(
            w(&["-m", "node"]),
            Some((exe(&root, "libexec/bitcoin-node"), vec![]))
        );
        assert_eq!(
            w(&["--multiprocess", "node"]).unwrap().0,
            exe(&root, "libexec/bitcoin-node")
        );
        // Monolithic: bitcoind is not in libexec/, so the one next to the wrapper.
        assert_eq!(
            w(&["node", "-regtest"]),
            Some((exe(&root, "bin/bitcoind"), args(&["-regtest"])))
        );
        assert_eq!(
            w(&["-M", "node", "-ipcbind=unix"]).unwrap().0,
            exe(&root, "bin/bitcoind")
        );
        // -ipcbind after a positional argument is not an option.
        assert_eq!(
            w(&["node", "x", "-ipcbind=unix"]).unwrap().0,
            exe(&root, "bin/bitcoind")
        );
        assert_eq!(w(&["gui"]).unwrap().0, exe(&root, "bin/bitcoin-qt"));
        assert_eq!(
            w(&["-m", "gui"]).unwrap().0,
            exe(&root, "libexec/bitcoin-gui")
        );
        assert_eq!(
            w(&["rpc", "-regtest", "getblockcount"]),
            Some((
                exe(&root, "bin/bitcoin-cli"),
                args(&["-named", "-regtest", "getblockcount"])
            ))
        );
        assert_eq!(
            w(&["wallet", "info"]).unwrap().0,
            exe(&root, "bin/bitcoin-wallet")
        );
        assert_eq!(
            w(&["tx", "-create"]).unwrap().0,
            exe(&root, "bin/bitcoin-tx")
        );
        assert_eq!(
            w(&["util", "grind"]).unwrap().0,
            exe(&root, "bin/bitcoin-util")
        );
        // Options after the command belong to the target.
        assert_eq!(w(&["rpc", "-h"]).unwrap().1, args(&["-named", "-h"]));
        assert_eq!(w(&["", "tx"]).unwrap().0, exe(&root, "bin/bitcoin-tx"));

        for a in [
            &[][..],
            &["-v", "node"],
            &["--help"],
            &["help"],
            &["-x", "node"],
            &["bench"],
            &["chainstate"],
            &["test"],
            &["frobnicate"],
        ] {
            assert_eq!(w(a), None, "{a:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn wrapper_lookup_order() {
        let t = TempDir::new("wrapdir");
        let root = fake_tree(&t);
        // Through a symlink in a directory not named bin: the real directory counts.
        fs::create_dir_all(root.join("links")).unwrap();
        std::os::unix::fs::symlink(root.join("bin/bitcoin"), root.join("links/bitcoin")).unwrap();
        let target = wrapper_target(&args(&["-m", "node"]), &root.join("links/bitcoin"), None);
        assert_eq!(target.unwrap().0, root.join("libexec/bitcoin-node"));

        // A build directory: next to the wrapper.
        t.write("build/bitcoin", "");
        t.write("build/bitcoin-node", "");
        let target = wrapper_target(&args(&["-m", "node"]), &root.join("build/bitcoin"), None);
        assert_eq!(target.unwrap().0, root.join("build/bitcoin-node"));

        // Started by path and not found there: no $PATH search.
        let path = root.join("libexec").into_os_string();
        assert_eq!(
            wrapper_target(&args(&["wallet"]), &root.join("build/bitcoin"), Some(&path)),
            None
        );

        // Started by a bare name: the wrapper itself is found along $PATH ...
        let path = std::env::join_paths([root.join("nothing"), root.join("bin")]).unwrap();
        let target = wrapper_target(&args(&["-m", "node"]), Path::new("bitcoin"), Some(&path));
        assert_eq!(target.unwrap().0, root.join("libexec/bitcoin-node"));
        // ... and targets not beside it are searched for along $PATH (executables only).
        let tools = root.join("tools");
        t.write("tools/bitcoin-util", "");
        t.write("tools2/bitcoin-util", "");
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(
                root.join("tools2/bitcoin-util"),
                fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        fs::remove_file(root.join("bin/bitcoin-util")).unwrap();
        let path = std::env::join_paths([root.join("bin"), tools, root.join("tools2")]).unwrap();
        let target = wrapper_target(&args(&["util"]), Path::new("bitcoin"), Some(&path));
        assert_eq!(target.unwrap().0, root.join("tools2/bitcoin-util"));
    }

    #[test]
    fn wrapper_reads_the_config_when_given_the_environment() {
        let t = TempDir::new("wrapconf");
        let root = fake_tree(&t);
        let env = t.env();
        // The wrapper reads the config where this platform's bitcoin-node would.
        let conf = default_datadir(Os::CURRENT, &env).join("bitcoin.conf");
        fs::create_dir_all(conf.parent().unwrap()).unwrap();
        fs::write(&conf, "[regtest]\nipcbind=unix\n").unwrap();
        let wrapper = root.join("bin/bitcoin");
        let w = |a: &[&str]| {
            wrapper_target_with_env(&args(a), &wrapper, None, &env)
                .unwrap()
                .0
        };
        assert_eq!(w(&["node", "-regtest"]), exe(&root, "libexec/bitcoin-node"));
        assert_eq!(
            w(&["node"]),
            exe(&root, "bin/bitcoind"),
            "the [regtest] section only counts on regtest"
        );
        assert_eq!(w(&["-M", "node", "-regtest"]), exe(&root, "bin/bitcoind"));
        // Without the environment only the arguments count.
        let target = wrapper_target(&args(&["node", "-regtest"]), &wrapper, None);
        assert_eq!(target.unwrap().0, exe(&root, "bin/bitcoind"));
    }

    /// `-datadir=<dd>` for a fresh `<tmp>/dd`, and the directory.
    fn datadir_arg_for(t: &TempDir) -> (String, PathBuf) {
        let dd = t.path().join("dd");
        fs::create_dir_all(&dd).unwrap();
        (format!("-datadir={}", dd.display()), dd)
    }

    /// The plan's notes, each checked to end as a note does.
    fn notes(p: &Plan) -> Vec<String> {
        for n in &p.notes {
            assert!(n.ends_with("(the program will report this itself)"), "{n}");
        }
        p.notes.clone()
    }

    #[test]
    fn includeconf_is_followed_like_bitcoin() {
        let t = TempDir::new("inc");
        let env = t.env();
        let (dd_arg, dd) = datadir_arg_for(&t);
        let r = dd.join("regtest");
        // The chain section's includes first, then the top level's; each file's values come
        // after the config's own, section by section; included files cannot include.
        t.write(
            "dd/bitcoin.conf",
            "ipcbind=unix:top.sock\nincludeconf=top.conf\n[regtest]\nincludeconf=rt.conf\nipcbind=unix:rtmain.sock\n",
        );
        t.write(
            "dd/top.conf",
            "ipcbind=unix:top-inc.sock\nincludeconf=nested.conf\n[regtest]\nipcbind=unix:top-inc-rt.sock\n",
        );
        t.write(
            "dd/rt.conf",
            "ipcbind=unix:rt-inc.sock\n[regtest]\nipcbind=unix:rt-inc-rt.sock\n",
        );
        t.write("dd/nested.conf", "ipcbind=unix:nested.sock\n");
        let p = node(&["-regtest", &dd_arg], &env);
        assert_eq!(
            bind_paths(&p),
            [
                "rtmain.sock",
                "rt-inc-rt.sock",
                "top-inc-rt.sock",
                "top.sock",
                "rt-inc.sock",
                "top-inc.sock"
            ]
            .map(|n| r.join(n))
        );
        assert_eq!(p.included, vec![dd.join("rt.conf"), dd.join("top.conf")]);
        assert_eq!(p.config, ConfigFile::Read(dd.join("bitcoin.conf")));
        assert_eq!(
            p.binds[1].origin,
            BindOrigin::ConfigFile {
                file: dd.join("rt.conf"),
                line: 3
            }
        );
        assert!(p.notes.is_empty(), "{:?}", p.notes);

        // -noincludeconf (last) turns includes off, and is the only -includeconf allowed.
        let p = node(
            &["-regtest", &dd_arg, "-includeconf=x", "-noincludeconf"],
            &env,
        );
        assert_eq!(bind_paths(&p), [r.join("rtmain.sock"), r.join("top.sock")]);
        assert!(p.included.is_empty());

        // Another chain's section is not followed; regtest.includeconf= is the chain's; a
        // negation in the config drops the includes before it.
        t.write(
            "dd/bitcoin.conf",
            "[main]\nincludeconf=top.conf\n[regtest]\nincludeconf=rt.conf\nnoincludeconf=1\n",
        );
        assert!(node(&["-regtest", &dd_arg], &env).included.is_empty());
        t.write("dd/bitcoin.conf", "regtest.includeconf=rt.conf\n");
        assert_eq!(
            node(&["-regtest", &dd_arg], &env).included,
            vec![dd.join("rt.conf")]
        );

        // An included file may pick the chain; the chain's section named only then is not
        // followed (Bitcoin warns).
        t.write(
            "dd/bitcoin.conf",
            "includeconf=pick.conf\n[regtest]\nincludeconf=rt.conf\n",
        );
        t.write("dd/pick.conf", "regtest=1\nipcbind=unix:pick.sock\n");
        let p = node(&[&dd_arg], &env);
        assert_eq!(p.chain, "regtest");
        assert_eq!(bind_paths(&p), [r.join("pick.sock")]);

        // Relative to the command line's datadir: not the config's datadir=, not -conf's
        // directory. An absolute one as it is.
        let e = t.path().join("e");
        fs::create_dir_all(&e).unwrap();
        t.write("e/inc.conf", "ipcbind=unix:wrong.sock\n");
        t.write("dd/inc.conf", "ipcbind=unix:right.sock\n");
        // (-conf elsewhere while the datadir has a bitcoin.conf would stop the node.)
        fs::remove_file(dd.join("bitcoin.conf")).unwrap();
        t.write("conf/x.conf", "includeconf=inc.conf\n");
        t.write("conf/inc.conf", "ipcbind=unix:wrong.sock\n");
        let conf_arg = format!("-conf={}", t.path().join("conf/x.conf").display());
        let p = node(&["-regtest", &dd_arg, &conf_arg], &env);
        assert_eq!(bind_paths(&p), [r.join("right.sock")]);
        t.write(
            "home/.bitcoin/bitcoin.conf",
            &format!("datadir={}\nincludeconf=inc.conf\n", e.display()),
        );
        t.write("home/.bitcoin/inc.conf", "ipcbind=unix:home.sock\n");
        let p = node(&["-regtest"], &env);
        assert_eq!(bind_paths(&p), [e.join("regtest/home.sock")]);
        let abs_inc = t.write("abs.conf", "ipcbind=unix:abs.sock\n");
        t.write(
            "dd/bitcoin.conf",
            &format!("includeconf={}\n", abs_inc.display()),
        );
        assert_eq!(node(&["-regtest", &dd_arg], &env).included, vec![abs_inc]);
    }

    #[test]
    fn includeconf_problems_are_notes_and_the_cli_ignores_includes() {
        let t = TempDir::new("incbad");
        let env = t.env();
        let (dd_arg, dd) = datadir_arg_for(&t);
        let a = ["-regtest", dd_arg.as_str(), "-ipcbind=unix:cmd.sock"];
        for (conf, include, want) in [
            (
                "includeconf=gone.conf\nipcbind=unix:c\n",
                None,
                "includeconf: cannot read \"gone.conf\"",
            ),
            ("includeconf=\n", None, "includeconf: cannot read \"\""),
            ("includeconf=sub\n", None, "is a directory"),
            (
                "includeconf=i.conf\n",
                Some("bogus line\n"),
                "parse error on line 1: bogus line",
            ),
            (
                "includeconf=i.conf\n",
                Some("conf=x\n"),
                "conf cannot be set in the configuration file",
            ),
        ] {
            fs::create_dir_all(dd.join("sub")).unwrap();
            t.write("dd/bitcoin.conf", conf);
            if let Some(text) = include {
                t.write("dd/i.conf", text);
            }
            let p = node(&a, &env);
            let n = notes(&p);
            assert!(n.len() == 1 && n[0].contains(want), "{conf:?}: {n:?}");
            // The node stops: planned from the command line alone.
            assert_eq!(bind_paths(&p), [dd.join("regtest/cmd.sock")], "{conf:?}");
        }
        // bitcoin-cli does not register -includeconf: its config's includeconf= is an unknown
        // key, so a missing include is no problem and an included file's values do not count.
        t.write("dd/bitcoin.conf", "includeconf=gone.conf\n");
        let p = cli(&["-regtest", &dd_arg, "-ipcconnect=unix", "x"], &env);
        assert!(p.notes.is_empty() && p.included.is_empty(), "{p:?}");
        t.write("dd/bitcoin.conf", "includeconf=i.conf\n");
        t.write("dd/i.conf", "[regtest]\nipcconnect=unix:inc.sock\n");
        assert_eq!(
            cli(&["-regtest", &dd_arg, "-ipcconnect=unix", "x"], &env).connect,
            Some(dd.join("regtest/node.sock"))
        );
    }

    #[test]
    fn command_line_errors_the_programs_stop_at() {
        let t = TempDir::new("cmderr");
        let env = t.env();
        for (program, a, want) in [
            (
                "bitcoin-node",
                &["-includeconf=x.conf"][..],
                "-includeconf cannot be used from commandline; -includeconf=\"x.conf\"",
            ),
            (
                "bitcoin-node",
                &["-noincludeconf=0"][..],
                "-includeconf=true",
            ),
            (
                "bitcoin-node",
                &["-noincludeconf", "-includeconf=y"][..],
                "-includeconf=\"y\"",
            ),
            (
                "bitcoin-node",
                &["-regtest.ipcbind=unix"][..],
                "Invalid parameter -regtest.ipcbind=unix",
            ),
            (
                "bitcoin-node",
                &["-nodatadir"][..],
                "Negating of -datadir is meaningless",
            ),
            (
                "bitcoin-node",
                &["-nodatadir=0"][..],
                "Negating of -datadir is meaningless",
            ),
            (
                "bitcoind",
                &["-regtest", "pos"][..],
                "unexpected token 'pos'",
            ),
            (
                "bitcoin-node",
                &["-regtest", "-", "x"][..],
                "unexpected token 'x'",
            ),
            (
                "bitcoin-cli",
                &["-includeconf=x", "getblockcount"][..],
                "Invalid parameter -includeconf=x",
            ),
            (
                "bitcoin-cli",
                &["-noincludeconf"][..],
                "Invalid parameter -noincludeconf",
            ),
            (
                "bitcoin-cli",
                &["-main.ipcconnect=unix"][..],
                "Invalid parameter -main.ipcconnect=unix",
            ),
        ] {
            let e = err(program, a, &env);
            assert!(e.to_string().contains(want), "{program} {a:?}: {e}");
        }
        // Allowed: a final -noincludeconf; the GUI's payment URI; the cli's command.
        node(&["-includeconf=x", "-noincludeconf"], &env);
        plan_for(Os::Unix, "bitcoin-gui", &args(&["bitcoin:x"]), &env, false).unwrap();
        cli(&["-regtest", "getblockcount", "-x"], &env);
    }

    #[test]
    fn a_datadir_with_another_bitcoin_conf_stops_the_node() {
        let t = TempDir::new("ignored");
        let env = t.env();
        let (dd_arg, dd) = datadir_arg_for(&t);
        t.write("dd/bitcoin.conf", "ipcbind=unix:d.sock\n");
        let x = t.write("x.conf", "ipcbind=unix:x.sock\n");
        let conf_arg = format!("-conf={}", x.display());
        let e = err("bitcoin-node", &["-regtest", &dd_arg, &conf_arg], &env);
        assert!(
            matches!(&e, BitcoinArgsError::IgnoredConfig { datadir, used } if *datadir == dd && *used == x),
            "{e:?}"
        );
        // Allowed by -allowignoredconf, on the command line or in the config.
        let p = node(&["-regtest", &dd_arg, &conf_arg, "-allowignoredconf"], &env);
        assert_eq!(bind_paths(&p), [dd.join("regtest/x.sock")]);
        t.write("x.conf", "allowignoredconf=1\nipcbind=unix:x.sock\n");
        node(&["-regtest", &dd_arg, &conf_arg], &env);
        assert!(matches!(
            err(
                "bitcoin-node",
                &["-regtest", &dd_arg, &conf_arg, "-allowignoredconf=0"],
                &env
            ),
            BitcoinArgsError::IgnoredConfig { .. }
        ));
        // The datadir's own file by another name is no conflict; bitcoin-cli does not check.
        node(&["-regtest", &dd_arg, "-conf=bitcoin.conf"], &env);
        cli(&["-regtest", &dd_arg, &conf_arg, "x"], &env);
        // A datadir= in the config that holds its own bitcoin.conf.
        let e_dir = t.path().join("e");
        t.write("e/bitcoin.conf", "\n");
        t.write(
            "home/.bitcoin/bitcoin.conf",
            &format!("datadir={}\n", e_dir.display()),
        );
        assert!(matches!(
            err("bitcoin-node", &["-regtest"], &env),
            BitcoinArgsError::IgnoredConfig { .. }
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_same_config_file_through_a_symlink_is_no_conflict() {
        let t = TempDir::new("samefile");
        let env = t.env();
        let (dd_arg, dd) = datadir_arg_for(&t);
        t.write("dd/bitcoin.conf", "ipcbind=unix:d.sock\n");
        let link = t.path().join("link.conf");
        std::os::unix::fs::symlink(dd.join("bitcoin.conf"), &link).unwrap();
        let p = node(
            &["-regtest", &dd_arg, &format!("-conf={}", link.display())],
            &env,
        );
        assert_eq!(bind_paths(&p), [dd.join("regtest/d.sock")]);
    }

    #[test]
    fn config_datadirs_are_checked_as_bitcoin_does() {
        let t = TempDir::new("confdd");
        let env = t.env();
        let e = t.path().join("e");
        fs::create_dir_all(&e).unwrap();
        let missing = t.path().join("nope");
        // A missing top-level datadir= counts even when the chain's section names one that
        // exists (Bitcoin checks it before the chain is known).
        t.write(
            "home/.bitcoin/bitcoin.conf",
            &format!(
                "datadir={}\n[regtest]\ndatadir={}\n",
                missing.display(),
                e.display()
            ),
        );
        let got = err("bitcoin-node", &["-regtest"], &env);
        assert!(
            matches!(&got, BitcoinArgsError::DatadirMissing(p) if *p == missing),
            "{got:?}"
        );
        // The chain's section's datadir= wins over the top level's, and a missing one is an
        // error (the node aborts).
        t.write(
            "home/.bitcoin/bitcoin.conf",
            &format!(
                "datadir={}\n[regtest]\ndatadir={}\n",
                e.display(),
                missing.display()
            ),
        );
        assert!(matches!(
            err("bitcoin-node", &["-regtest"], &env),
            BitcoinArgsError::DatadirMissing(_)
        ));
        assert_eq!(node(&[], &env).network_datadir, e);
        // The config is not in force without it: the command line's datadir decides.
        let p = node(&["-regtest", "-noconf"], &env);
        assert_eq!(p.network_datadir, t.path().join("home/.bitcoin/regtest"));
    }

    #[test]
    fn the_settings_file_is_merged_like_bitcoin() {
        let t = TempDir::new("settings");
        let env = t.env();
        let (dd_arg, dd) = datadir_arg_for(&t);
        let r = dd.join("regtest");
        let settings = |json: &str| t.write("dd/regtest/settings.json", json);
        let file = settings(r#"{"ipcbind": "unix:s.sock"}"#);
        // Between the command line and the config.
        t.write("dd/bitcoin.conf", "ipcbind=unix:c.sock\n");
        let p = node(&["-regtest", &dd_arg, "-ipcbind=unix"], &env);
        assert_eq!(
            bind_paths(&p),
            [r.join("node.sock"), r.join("s.sock"), r.join("c.sock")]
        );
        assert_eq!(
            p.binds[1].origin,
            BindOrigin::SettingsFile { file: file.clone() }
        );
        assert_eq!(p.settings, Some(file));
        // A settings-file bind counts as given: no default bind added on top.
        let p = plan_for(
            Os::Unix,
            "bitcoin-node",
            &args(&["-regtest", &dd_arg]),
            &env,
            true,
        )
        .unwrap();
        assert!(p.binds.iter().all(|b| b.origin != BindOrigin::Added));

        // An array is a list; false is a negation, which leaves the config's out unless
        // command-line values came first; in an array false is the address "0".
        settings(r#"{"ipcbind": ["unix:a.sock", "unix:b.sock"]}"#);
        let p = node(&["-regtest", &dd_arg], &env);
        assert_eq!(
            bind_paths(&p),
            [r.join("a.sock"), r.join("b.sock"), r.join("c.sock")]
        );
        settings(r#"{"ipcbind": false}"#);
        assert!(node(&["-regtest", &dd_arg], &env).binds.is_empty());
        let p = node(&["-regtest", &dd_arg, "-ipcbind=unix"], &env);
        assert_eq!(bind_paths(&p), [r.join("node.sock"), r.join("c.sock")]);
        for (json, address) in [
            (r#"{"ipcbind": ["unix:a.sock", false]}"#, "0"),
            (r#"{"ipcbind": true}"#, "1"),
        ] {
            settings(json);
            let e = err("bitcoin-node", &["-regtest", &dd_arg], &env);
            assert!(
                matches!(&e, BitcoinArgsError::UnrecognizedAddress { address: a, .. } if a == address),
                "{json}: {e:?}"
            );
        }
        for (json, kind) in [
            (r#"{"ipcbind": 5}"#, "number"),
            (r#"{"ipcbind": null}"#, "null"),
            (r#"{"ipcbind": {"x": 1}}"#, "object"),
            (r#"{"ipcbind": [["unix"]]}"#, "array"),
        ] {
            settings(json);
            let e = err("bitcoin-node", &["-regtest", &dd_arg], &env);
            assert!(
                matches!(&e, BitcoinArgsError::SettingsValue { kind: k, .. } if *k == kind),
                "{json}: {e:?}"
            );
        }
        // Keys are plain option names.
        settings(r#"{"regtest.ipcbind": "unix:x", "noipcbind": true, "-ipcbind": "unix:y"}"#);
        assert_eq!(
            bind_paths(&node(&["-regtest", &dd_arg], &env)),
            [r.join("c.sock")]
        );

        // What the node stops at is a note; the rest is still planned.
        for (json, want) in [
            ("garbage", "does not contain valid JSON"),
            ("[]", "found non-object value []"),
            (
                r#"{"ipcbind": "unix:a", "ipcbind": "unix:b"}"#,
                "found duplicate key ipcbind",
            ),
        ] {
            settings(json);
            let p = node(&["-regtest", &dd_arg], &env);
            let n = notes(&p);
            assert!(n.len() == 1 && n[0].contains(want), "{json}: {n:?}");
            assert_eq!(bind_paths(&p), [r.join("c.sock")]);
            assert_eq!(p.settings, None);
        }
        fs::remove_file(r.join("settings.json")).unwrap();
        fs::create_dir_all(r.join("settings.json")).unwrap();
        assert!(notes(&node(&["-regtest", &dd_arg], &env))[0].contains("is a directory"));

        // -nosettings; -settings relative to the network datadir (which need not exist yet: the
        // node creates it first), -settings=0 a file named 0, settings= from the config.
        fs::remove_dir_all(&dd).unwrap();
        fs::create_dir_all(&dd).unwrap();
        let json = r#"{"ipcbind": "unix:s.sock"}"#;
        t.write("dd/x.json", json);
        let p = node(&["-regtest", &dd_arg, "-settings=../x.json"], &env);
        assert_eq!(bind_paths(&p), [r.join("s.sock")]);
        assert_eq!(p.settings, Some(dd.join("x.json")));
        t.write("dd/regtest/0", json);
        assert_eq!(p.binds.len(), 1);
        assert_eq!(
            bind_paths(&node(&["-regtest", &dd_arg, "-settings=0"], &env)),
            [r.join("s.sock")]
        );
        t.write("dd/regtest/settings.json", json);
        assert!(
            node(&["-regtest", &dd_arg, "-nosettings"], &env)
                .binds
                .is_empty()
        );
        assert_eq!(
            node(&["-regtest", &dd_arg, "-settings="], &env).binds.len(),
            1
        );
        t.write("dd/bitcoin.conf", "settings=../x.json\n");
        assert_eq!(
            node(&["-regtest", &dd_arg], &env).settings,
            Some(r.join("../x.json"))
        );
        // Neither the cli nor other programs read it.
        assert_eq!(cli(&["-regtest", &dd_arg, "x"], &env).settings, None);
    }

    #[test]
    fn in_new_dir_takes_parent_steps_out_of_missing_directories_lexically() {
        let t = TempDir::new("newdir");
        let d = t.path().join("a/b");
        assert_eq!(in_new_dir(&d, "../x"), t.path().join("a/x"));
        assert_eq!(in_new_dir(&d, "../../x"), t.path().join("x"));
        assert_eq!(in_new_dir(&d, "./y/../x"), t.path().join("a/b/x"));
        // Out of an existing directory the OS decides: left as it is.
        assert_eq!(in_new_dir(&d, "../../../x"), t.path().join("../x"));
        fs::create_dir_all(&d).unwrap();
        assert_eq!(in_new_dir(&d, "../x"), d.join("../x"));
    }

    #[test]
    fn the_config_file_as_the_node_logs_it() {
        let t = TempDir::new("conflog");
        let env = t.env();
        let (dd_arg, dd) = datadir_arg_for(&t);
        let conf = dd.join("bitcoin.conf");
        let text = |a: &[&str]| node(a, &env).config.log_text();
        assert_eq!(
            text(&[&dd_arg]),
            Some(format!("{} (not found, skipping)", conf.display()))
        );
        assert_eq!(text(&[&dd_arg, "-noconf"]), Some("<disabled>".to_string()));
        t.write("dd/bitcoin.conf", "\n");
        assert_eq!(text(&[&dd_arg]), Some(conf.display().to_string()));
        // (Another file while the datadir has a bitcoin.conf would stop the node.)
        fs::remove_file(&conf).unwrap();
        t.write("dd/1", "\n");
        assert_eq!(
            text(&[&dd_arg, "-noconf=0"]),
            Some(dd.join("1").display().to_string())
        );
        // The node stops before logging it.
        let p = node(&[&dd_arg, "-conf=0"], &env);
        assert_eq!(p.config, ConfigFile::Unreadable(dd.join("0")));
        assert_eq!(p.config.log_text(), None);
        let p = plan_for(Os::Unix, "sv2-tp", &args(&[&dd_arg]), &env, false).unwrap();
        assert_eq!(p.config, ConfigFile::NotConsulted);
    }

    #[test]
    fn the_wrapper_reads_configs_as_it_does() {
        let t = TempDir::new("wrapinc");
        let root = fake_tree(&t);
        let env = t.env();
        let (dd_arg, dd) = datadir_arg_for(&t);
        let wrapper = root.join("bin/bitcoin");
        let w = |a: &[&str]| {
            let mut v = vec!["node", "-regtest", dd_arg.as_str()];
            v.extend_from_slice(a);
            wrapper_target_with_env(&args(&v), &wrapper, None, &env).map(|(p, _)| p)
        };
        let node_exe = Some(exe(&root, "libexec/bitcoin-node"));
        let bitcoind = Some(exe(&root, "bin/bitcoind"));
        // Included files count.
        t.write("dd/bitcoin.conf", "includeconf=i.conf\n");
        t.write("dd/i.conf", "[regtest]\nipcbind=unix\n");
        assert_eq!(w(&[]), node_exe);
        // A file it cannot read: what it read before counts, that file does not.
        t.write("dd/bitcoin.conf", "ipcbind=unix\nincludeconf=gone.conf\n");
        assert_eq!(w(&[]), node_exe);
        t.write("dd/bitcoin.conf", "includeconf=i.conf\n");
        t.write("dd/i.conf", "ipcbind=unix\n-bad\n");
        assert_eq!(w(&[]), bitcoind);
        // It stops itself: conflicting chains, -includeconf with a config file there, a
        // missing -datadir.
        assert_eq!(w(&["-testnet"]), None);
        assert_eq!(w(&["-includeconf=x"]), None);
        let gone = format!("-datadir={}", t.path().join("gone").display());
        assert_eq!(w(&[&gone]), None);
        // ... but not with -m/-M, when it does not look at the options.
        let m = wrapper_target_with_env(&args(&["-m", "node", &gone]), &wrapper, None, &env);
        assert_eq!(m.map(|(p, _)| p), node_exe);
        // An unknown chain's section counts (it does not check the chain); a config datadir=
        // that is missing is not its concern; the settings file is not read.
        t.write("dd/bitcoin.conf", "[bogus]\nipcbind=unix\n");
        let bogus = args(&["node", "-chain=bogus", &dd_arg]);
        let target = wrapper_target_with_env(&bogus, &wrapper, None, &env);
        assert_eq!(target.map(|(p, _)| p), node_exe);
        let home_conf = default_datadir(Os::CURRENT, &env).join("bitcoin.conf");
        fs::create_dir_all(home_conf.parent().unwrap()).unwrap();
        let gone_dir = t.path().join("gone");
        fs::write(
            &home_conf,
            format!("ipcbind=unix\ndatadir={}\n", gone_dir.display()),
        )
        .unwrap();
        let target = wrapper_target_with_env(&args(&["node"]), &wrapper, None, &env);
        assert_eq!(target.map(|(p, _)| p), node_exe);
        fs::remove_file(dd.join("bitcoin.conf")).unwrap();
        t.write("dd/regtest/settings.json", r#"{"ipcbind": "unix"}"#);
        assert_eq!(w(&[]), bitcoind);
    }
}

#[cfg(test)]
mod other_programs {
    use super::*;

    fn env() -> Env {
        Env {
            home: Some(std::env::temp_dir().join("mpspy-other-home-does-not-exist")),
            cwd: std::env::temp_dir(),
            local_app_data: None,
            app_data: None,
        }
    }

    #[test]
    fn programs_on_bitcoins_option_parser_are_interposed_by_their_own_arguments() {
        let args: Vec<String> = vec![
            "-ipcconnect=unix:/tmp/x/node.sock".into(),
            "-loglevel=trace".into(),
        ];
        let p = plan("sv2-tp", &args, &env(), true).unwrap();
        assert_eq!(p.connect, Some(super::tests::abs("/tmp/x/node.sock")));
        assert!(
            p.binds.is_empty(),
            "never a default bind for other programs"
        );

        let args: Vec<String> = vec!["-ipcbind=unix:/tmp/y/peer.sock".into()];
        let p = plan("mpspy-testpeer", &args, &env(), true).unwrap();
        assert_eq!(p.binds.len(), 1);
        assert_eq!(p.binds[0].path, super::tests::abs("/tmp/y/peer.sock"));
        assert!(p.connect.is_none(), "no implicit -ipcconnect=auto");
        assert_eq!(
            rewrite(&args, &p, None),
            args,
            "its own binds are left as they are"
        );

        // Nothing asked for: nothing to interpose.
        let p = plan("some-tool", &["-foo".to_string()], &env(), true).unwrap();
        assert!(p.binds.is_empty() && p.connect.is_none());
    }
}
