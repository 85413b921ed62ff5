//! Windows' rules for command lines, program names and paths, as plain string functions.
//!
//! They are compiled and unit-tested on every platform (Windows paths are just strings here, so
//! `C:\x` means the same on Linux), and used by the Windows spawn code (`crate::winspawn`, Windows only).
//!
//! - [`command_line`]: libmultiprocess builds the child's command line from its argv with the
//!   quoting that `CommandLineToArgvW` undoes (protocol README §5.4), so the child sees the
//!   same argv. We quote the same way.
//! - [`program_file`] and [`resolve_program`]: `NAME` runs `NAME.exe` on Windows. A spawn of
//!   `<dir>\bitcoin-wallet` must find `<dir>\bitcoin-wallet.exe`, and a shim directory must hold
//!   `bitcoin-wallet.exe`.
//! - [`same_path`]: Windows file names are case-insensitive and take `/` as well as `\`, so
//!   `C:/Bitcoin/bin` and `c:\bitcoin\BIN` are one directory.

use std::path::{Path, PathBuf};

/// Appends `arg` to `out` quoted so that `CommandLineToArgvW` gives back exactly `arg`.
///
/// An argument that is non-empty and has no space, tab or `"` is copied as it is: backslashes
/// are only special before a `"`, and there is none. Anything else is wrapped in `"…"`, where
/// each `"` becomes `\"`, a run of backslashes before a `"` (or before the closing quote, at the
/// end) is doubled, and other backslashes stay single.
pub fn quote_arg(arg: &str, out: &mut String) {
    if !arg.is_empty() && !arg.contains([' ', '\t', '"']) {
        out.push_str(arg);
        return;
    }
    out.push('"');
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                // 2n backslashes make n, and the last one escapes the quote.
                push_n(out, '\\', 2 * backslashes + 1);
                out.push('"');
                backslashes = 0;
            }
            _ => {
                push_n(out, '\\', backslashes);
                out.push(c);
                backslashes = 0;
            }
        }
    }
    // The closing quote follows: doubled, these stay backslashes instead of escaping it.
    push_n(out, '\\', 2 * backslashes);
    out.push('"');
}

fn push_n(out: &mut String, c: char, n: usize) {
    out.extend(std::iter::repeat_n(c, n));
}

/// The command line for `args` (argv0 first): each argument quoted by [`quote_arg`], separated
/// by one space, as libmultiprocess builds it.
///
/// `CommandLineToArgvW` reads argv0 by simpler rules (up to the next quote or space, no
/// escapes); a program path has no `"` and no trailing backslash, so the quoting above gives it
/// back unchanged too.
pub fn command_line<S: AsRef<str>>(args: impl IntoIterator<Item = S>) -> String {
    let mut line = String::new();
    for (i, arg) in args.into_iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        quote_arg(arg.as_ref(), &mut line);
    }
    line
}

/// Whether `c` separates path components on Windows.
fn is_separator(c: char) -> bool {
    c == '/' || c == '\\'
}

/// The last component of a Windows path.
fn file_name(path: &str) -> &str {
    path.rsplit(is_separator).next().unwrap_or(path)
}

/// Whether `name` names a file in some directory (has a separator or a drive, like `C:x`) rather
/// than a bare program name that is looked up in `PATH`.
#[must_use]
pub fn has_directory(name: &str) -> bool {
    name.contains(is_separator) || name.as_bytes().get(1) == Some(&b':')
}

/// The file Windows runs for `name`: `NAME` becomes `NAME.exe` when its file name has no
/// extension (what `CreateProcess` does with a command line's program); `NAME.exe`,
/// `NAME.com` and the like stay as they are.
#[must_use]
pub fn program_file(name: &str) -> String {
    let file = file_name(name);
    // A leading dot (".hidden") does not start an extension.
    if file.get(1..).is_some_and(|rest| rest.contains('.')) {
        name.to_string()
    } else {
        format!("{name}.exe")
    }
}

/// Finds the file for program `name` as a spawn on Windows does: a name with a directory part
/// is that file ([`program_file`]); a bare name is looked up in `search` (the `PATH` entries)
/// in order. `exists` says whether a file is there (a parameter so the rules are testable
/// without touching the disk). `None` if no candidate exists.
pub fn resolve_program<I, F>(name: &str, search: I, exists: F) -> Option<PathBuf>
where
    I: IntoIterator<Item = PathBuf>,
    F: Fn(&Path) -> bool,
{
    let file = program_file(name);
    if has_directory(name) {
        let path = PathBuf::from(file);
        return exists(&path).then_some(path);
    }
    search
        .into_iter()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(&file))
        .find(|path| exists(path))
}

/// Whether two Windows paths name the same file by their spelling: case-insensitively, with `/`
/// and `\` alike, repeated and trailing separators ignored, and the verbatim prefix `\\?\`
/// ignored. Does not touch the disk (no symlinks, no `..`).
#[must_use]
pub fn same_path(a: &str, b: &str) -> bool {
    normalize(a).eq(normalize(b))
}

fn normalize(path: &str) -> impl Iterator<Item = char> + '_ {
    let path = path
        .strip_prefix(r"\\?\")
        .or_else(|| path.strip_prefix("//?/"))
        .unwrap_or(path);
    let unc = path.starts_with(['/', '\\']) && path[1..].starts_with(['/', '\\']);
    let mut components = path.split(is_separator).filter(|c| !c.is_empty());
    // A UNC path (\\server\share) must not compare equal to a rooted one (\server\share).
    let lead = if unc {
        "\\\\"
    } else if path.starts_with(is_separator) {
        "\\"
    } else {
        ""
    };
    let first = components.next();
    lead.chars()
        .chain(first.into_iter().flat_map(fold))
        .chain(components.flat_map(|c| std::iter::once('\\').chain(fold(c))))
}

/// Windows compares names through an upper-case table; Unicode upper-casing is what it uses
/// for everything outside rare special cases.
fn fold(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().flat_map(char::to_uppercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(arg: &str) -> String {
        let mut s = String::new();
        quote_arg(arg, &mut s);
        s
    }

    #[test]
    fn plain_arguments_stay_as_they_are() {
        assert_eq!(quoted("-ipcfd"), "-ipcfd");
        assert_eq!(quoted(r"\\.\pipe\mp-4242-1"), r"\\.\pipe\mp-4242-1");
        // Backslashes are only special before a quote, and there is none.
        assert_eq!(quoted(r"C:\dir\"), r"C:\dir\");
        assert_eq!(quoted("a\nb"), "a\nb");
    }

    #[test]
    fn spaces_tabs_and_empty_arguments_are_quoted() {
        assert_eq!(quoted(""), r#""""#);
        assert_eq!(quoted("hello world"), r#""hello world""#);
        assert_eq!(quoted("tab\there"), "\"tab\there\"");
        assert_eq!(
            quoted(r"C:\Program Files\Bitcoin"),
            r#""C:\Program Files\Bitcoin""#
        );
    }

    #[test]
    fn quotes_and_backslashes_before_them_are_escaped() {
        assert_eq!(quoted(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(quoted(r#"""#), r#""\"""#);
        // One backslash before a quote: 2·1+1 backslashes, then the quote.
        assert_eq!(quoted(r#"a\"b"#), r#""a\\\"b""#);
        assert_eq!(quoted(r#"a\\"b"#), r#""a\\\\\"b""#);
        // Backslashes elsewhere stay single.
        assert_eq!(quoted(r#"a\b "c""#), r#""a\b \"c\"""#);
    }

    #[test]
    fn trailing_backslashes_are_doubled_inside_quotes() {
        assert_eq!(quoted(r"C:\Program Files\"), r#""C:\Program Files\\""#);
        assert_eq!(quoted(r"a b\\"), r#""a b\\\\""#);
    }

    #[test]
    fn command_line_joins_with_one_space() {
        assert_eq!(
            command_line([
                r"C:\bitcoin\bitcoin-wallet",
                "-ipcfd",
                r"\\.\pipe\mp-4242-1"
            ]),
            r"C:\bitcoin\bitcoin-wallet -ipcfd \\.\pipe\mp-4242-1"
        );
        assert_eq!(
            command_line([r"C:\Program Files\x.exe", "", "a b"]),
            r#""C:\Program Files\x.exe" "" "a b""#
        );
        assert_eq!(command_line(Vec::<String>::new()), "");
    }

    /// `CommandLineToArgvW`'s rules for arguments after argv0, written out, so the round trip
    /// is checked on every platform (and against the real function on Windows, below).
    fn split_like_windows(args: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut chars = args.chars().peekable();
        loop {
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            if chars.peek().is_none() {
                return out;
            }
            let mut arg = String::new();
            let mut in_quotes = false;
            while let Some(&c) = chars.peek() {
                match c {
                    ' ' | '\t' if !in_quotes => break,
                    '\\' => {
                        let mut n = 0;
                        while chars.next_if_eq(&'\\').is_some() {
                            n += 1;
                        }
                        if chars.peek() == Some(&'"') {
                            push_n(&mut arg, '\\', n / 2);
                            if n % 2 == 1 {
                                arg.push('"');
                                chars.next();
                            }
                        } else {
                            push_n(&mut arg, '\\', n);
                        }
                    }
                    '"' => {
                        chars.next();
                        // `""` inside quotes is a literal quote (the post-2008 rule).
                        if in_quotes && chars.peek() == Some(&'"') {
                            arg.push('"');
                            chars.next();
                        } else {
                            in_quotes = !in_quotes;
                        }
                    }
                    _ => {
                        arg.push(c);
                        chars.next();
                    }
                }
            }
            out.push(arg);
        }
    }

    /// Arguments that exercise every rule.
    const TRICKY: &[&str] = &[
        "",
        "plain",
        "two words",
        "\ttab",
        r#"quote"inside"#,
        r#""leading and trailing""#,
        r"back\slash",
        r"trailing\",
        r"trailing space\ ",
        r"C:\Program Files\",
        r#"a\"b"#,
        r#"a\\"b"#,
        r#"a\\\"b"#,
        r"\\server\share\",
        r#"\"#,
        r#"""#,
        r#"\\"\\"#,
        "ünïcödé ✓",
        r"\\.\pipe\mp-4242-1",
    ];

    #[test]
    fn quoting_round_trips_through_the_windows_rules() {
        for arg in TRICKY {
            assert_eq!(
                split_like_windows(&quoted(arg)),
                vec![arg.to_string()],
                "{arg:?} quoted as {}",
                quoted(arg)
            );
        }
        let line = command_line(TRICKY);
        assert_eq!(split_like_windows(&line), TRICKY, "{line}");
    }

    #[cfg(windows)]
    #[test]
    fn quoting_round_trips_through_command_line_to_argv_w() {
        let mut argv = vec![r"C:\Program Files\mpspy\x.exe"];
        argv.extend(TRICKY);
        let line = command_line(&argv);
        assert_eq!(crate::winspawn::split_command_line(&line), argv, "{line}");
    }

    #[test]
    fn program_file_appends_exe_only_without_an_extension() {
        assert_eq!(program_file("bitcoin-node"), "bitcoin-node.exe");
        assert_eq!(
            program_file(r"C:\bitcoin\bitcoin-wallet"),
            r"C:\bitcoin\bitcoin-wallet.exe"
        );
        assert_eq!(program_file("bitcoin-node.exe"), "bitcoin-node.exe");
        assert_eq!(program_file("tool.com"), "tool.com");
        assert_eq!(program_file(".hidden"), ".hidden.exe");
        // A dot in a directory name is not the file's extension.
        assert_eq!(
            program_file(r"C:\bitcoin-31.0\bin/bitcoin"),
            r"C:\bitcoin-31.0\bin/bitcoin.exe"
        );
    }

    #[test]
    fn resolve_program_searches_path_for_bare_names_only() {
        let present = [
            PathBuf::from(r"C:\b").join("mpspy-testpeer.exe"),
            PathBuf::from(r"C:\dir\bitcoin-wallet.exe"),
        ];
        let exists = |p: &Path| present.iter().any(|q| q == p);
        let search = || {
            vec![
                PathBuf::new(),
                PathBuf::from(r"C:\a"),
                PathBuf::from(r"C:\b"),
            ]
        };
        assert_eq!(
            resolve_program("mpspy-testpeer", search(), exists),
            Some(PathBuf::from(r"C:\b").join("mpspy-testpeer.exe"))
        );
        assert_eq!(
            resolve_program("mpspy-testpeer.exe", search(), exists),
            Some(PathBuf::from(r"C:\b").join("mpspy-testpeer.exe"))
        );
        assert_eq!(resolve_program("missing", search(), exists), None);
        // A directory part: only that file, never PATH.
        assert_eq!(
            resolve_program(r"C:\dir\bitcoin-wallet", search(), exists),
            Some(PathBuf::from(r"C:\dir\bitcoin-wallet.exe"))
        );
        assert_eq!(
            resolve_program(r"C:\other\mpspy-testpeer", search(), exists),
            None
        );
    }

    #[test]
    fn directory_parts_use_either_separator_or_a_drive() {
        assert!(has_directory(r"dir\x"));
        assert!(has_directory("dir/x"));
        assert!(has_directory("C:x"));
        assert!(!has_directory("bitcoin-node"));
    }

    #[test]
    fn paths_compare_case_insensitively_with_either_separator() {
        assert!(same_path(r"C:\Bitcoin\bin", "c:/bitcoin/BIN"));
        assert!(same_path(r"C:\Bitcoin\bin\", r"C:\Bitcoin\\bin"));
        assert!(same_path(r"\\?\C:\Bitcoin", r"C:\bitcoin"));
        assert!(same_path(r"C:\Ünïcode", r"c:\üNÏCODE"));
        assert!(!same_path(r"C:\Bitcoin\bin", r"C:\Bitcoin\bin2"));
        assert!(!same_path(r"\\server\share", r"\server\share"));
        assert!(!same_path(r"C:\a\b", r"C:\ab"));
    }
}
