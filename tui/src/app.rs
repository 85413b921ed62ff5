//! The UI state machine: folded state plus what the user is looking at. Input returns an
//! [`Action`] instead of doing I/O, so tests drive it with keys and snapshot the result.

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Arc;

use mpspy_engine::SharedStats;
use mpspy_schema::Event;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::filter::Filter;
use crate::state::{LogSource, State};
use crate::tree;

/// Something for the UI to show.
#[derive(Debug)]
#[non_exhaustive]
pub enum Feed {
    /// A decoded event, shared with the other sinks.
    Event(Arc<Event>),
    /// The engine's statistics for the session (sent once, before its events): the Methods
    /// screen shows these rather than folding its own.
    Stats(SharedStats),
    /// A line the wrapped program wrote (`stderr` false: stdout), at `t_ns` session time.
    Output {
        /// Session time in nanoseconds.
        t_ns: u64,
        /// From stderr.
        stderr: bool,
        /// The line, without its end.
        line: String,
    },
    /// The source is done: the program exited (with this text) or the recording ended.
    Ended(String),
}

/// What the UI asks its runner to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Leave the UI.
    Quit,
    /// Ctrl-C: pass an interrupt to the wrapped program.
    Interrupt,
}

/// The screens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    Calls,
    Methods,
    Caps,
    Log,
    Threads,
}

impl View {
    pub(crate) const ALL: [View; 5] = [
        View::Calls,
        View::Methods,
        View::Caps,
        View::Log,
        View::Threads,
    ];

    pub(crate) fn title(self) -> &'static str {
        match self {
            View::Calls => "Calls",
            View::Methods => "Methods",
            View::Caps => "Capabilities",
            View::Log => "Log",
            View::Threads => "Threads",
        }
    }
}

/// Where keys go in the calls screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Focus {
    List,
    Detail,
}

/// A line being typed at the bottom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prompt {
    Filter(String),
    Search(String),
}

/// The pause point: rows after it are hidden and time stands still.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pause {
    pub(crate) next_id: u64,
    pub(crate) now_ns: u64,
}

/// How the UI was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// What is being watched, e.g. `bitcoin-node -regtest (pid 4242)` or `replay session.pcapng`.
    pub title: String,
    /// True for a live capture (Ctrl-C interrupts the program), false for a recording.
    pub live: bool,
    /// Call rows kept for the list (aggregates keep everything).
    pub history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            title: String::new(),
            live: false,
            history: 20_000,
        }
    }
}

/// The whole UI state.
#[derive(Debug)]
pub struct App {
    pub(crate) state: State,
    pub(crate) opts: Options,
    pub(crate) view: View,
    pub(crate) focus: Focus,
    /// Selected row id (None: follow the newest).
    pub(crate) selected: Option<u64>,
    pub(crate) paused: Option<Pause>,
    pub(crate) filter: Filter,
    pub(crate) prompt: Option<Prompt>,
    pub(crate) search: Option<String>,
    /// A one-line message at the bottom (text, is-error).
    pub(crate) message: Option<(String, bool)>,
    pub(crate) toggled: HashSet<String>,
    pub(crate) detail_cursor: usize,
    pub(crate) method_sel: usize,
    pub(crate) conn_sel: usize,
    pub(crate) lane_sel: usize,
    /// Lines up from the bottom of the log (0: follow).
    pub(crate) log_back: usize,
    pub(crate) help: bool,
    pub(crate) ended: Option<String>,
    /// Events the UI could not take in time (counted by the runner).
    pub(crate) ui_dropped: u64,
    /// First row shown in the list, kept between frames.
    pub(crate) list_offset: Cell<usize>,
    pub(crate) detail_offset: Cell<usize>,
    /// Body height of the last frame, for page keys.
    pub(crate) page: Cell<usize>,
}

impl App {
    /// A UI with nothing folded in yet.
    pub fn new(opts: Options) -> Self {
        App {
            state: State::new(opts.history),
            opts,
            view: View::Calls,
            focus: Focus::List,
            selected: None,
            paused: None,
            filter: Filter::default(),
            prompt: None,
            search: None,
            message: None,
            toggled: HashSet::new(),
            detail_cursor: 0,
            method_sel: 0,
            conn_sel: 0,
            lane_sel: 0,
            log_back: 0,
            help: false,
            ended: None,
            ui_dropped: 0,
            list_offset: Cell::new(0),
            detail_offset: Cell::new(0),
            page: Cell::new(10),
        }
    }

    /// Takes one item in.
    pub fn feed(&mut self, f: Feed) {
        match f {
            Feed::Event(e) => self.state.apply(&e),
            Feed::Stats(stats) => self.state.stats = stats,
            Feed::Output { t_ns, stderr, line } => {
                let source = if stderr {
                    LogSource::Stderr
                } else {
                    LogSource::Stdout
                };
                self.state.log_line(t_ns, source, line, false);
            }
            Feed::Ended(why) => {
                let t = self.state.last_ns;
                self.state.log_line(t, LogSource::Mpspy, why.clone(), false);
                self.ended = Some(why);
            }
        }
    }

    /// Events dropped on the way to the UI (shown in the header).
    pub fn set_ui_dropped(&mut self, n: u64) {
        self.ui_dropped = n;
    }

    /// The newest event time seen (the replay clock).
    pub fn last_event_ns(&self) -> u64 {
        self.state.last_ns
    }

    /// The clock the screens use: frozen while paused.
    pub(crate) fn now(&self, now_ns: u64) -> u64 {
        self.paused.map_or(now_ns, |p| p.now_ns)
    }

    /// Row ids the list shows, oldest first.
    pub(crate) fn visible(&self, now_ns: u64) -> Vec<u64> {
        let limit = self.paused.map_or(u64::MAX, |p| p.next_id);
        let now = self.now(now_ns);
        self.state
            .calls
            .iter()
            .filter(|r| r.id < limit && self.filter.matches(r, now))
            .map(|r| r.id)
            .collect()
    }

    /// The selected row id: the chosen one if still shown, else the newest shown.
    pub(crate) fn selection(&self, visible: &[u64]) -> Option<usize> {
        match self.selected {
            Some(id) => visible
                .binary_search(&id)
                .ok()
                .or_else(|| (!visible.is_empty()).then(|| visible.partition_point(|&v| v < id)))
                .map(|i| i.min(visible.len() - 1)),
            None => visible.len().checked_sub(1),
        }
    }

    pub(crate) fn following(&self) -> bool {
        self.selected.is_none()
    }

    fn detail_lines(&self, now_ns: u64) -> Vec<tree::TreeLine> {
        self.detail(now_ns, &self.visible(now_ns))
    }

    /// The detail tree of the selection among `visible` rows.
    pub(crate) fn detail(&self, now_ns: u64, visible: &[u64]) -> Vec<tree::TreeLine> {
        let Some(i) = self.selection(visible) else {
            return Vec::new();
        };
        match self.state.row(visible[i]) {
            Some(row) => tree::build(row, &self.toggled, self.now(now_ns), &|t| self.time(t)),
            None => Vec::new(),
        }
    }

    /// An event time as shown: UTC wall clock when the session start is known.
    pub(crate) fn time(&self, t_ns: u64) -> String {
        match self.state.start_unix_ns {
            Some(start) => {
                let t = start + t_ns;
                let secs = t / 1_000_000_000;
                let ms = (t / 1_000_000) % 1000;
                let day = secs % 86_400;
                format!(
                    "{:02}:{:02}:{:02}.{ms:03}",
                    day / 3600,
                    day / 60 % 60,
                    day % 60
                )
            }
            None => format!("+{}.{:03}", t_ns / 1_000_000_000, (t_ns / 1_000_000) % 1000),
        }
    }

    /// Handles a key at time `now_ns`.
    pub fn handle_key(&mut self, key: KeyEvent, now_ns: u64) -> Action {
        // Terminals that report releases and repeats would act twice otherwise.
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return if self.opts.live && self.ended.is_none() {
                self.message = Some((
                    "interrupt sent to the program (SIGINT); q leaves when you are done".into(),
                    false,
                ));
                Action::Interrupt
            } else {
                Action::Quit
            };
        }
        if let Some(prompt) = self.prompt.take() {
            self.prompt_key(prompt, key, now_ns);
            return Action::None;
        }
        if self.help {
            self.help = false;
            return Action::None;
        }
        self.message = None;
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(c @ '1'..='5') => {
                self.view = View::ALL[usize::from(c as u8 - b'1')];
            }
            KeyCode::Tab if !(self.view == View::Calls && self.focus == Focus::Detail) => {
                self.cycle_view(1);
            }
            KeyCode::BackTab => self.cycle_view(View::ALL.len() - 1),
            KeyCode::Char('f') => {
                self.prompt = Some(Prompt::Filter(self.filter.text().to_string()));
            }
            KeyCode::Char('/') => self.prompt = Some(Prompt::Search(String::new())),
            KeyCode::Char('n') => self.search_step(now_ns, true),
            KeyCode::Char('N') => self.search_step(now_ns, false),
            KeyCode::Char(' ') | KeyCode::Char('p')
                if !(self.view == View::Calls && self.focus == Focus::Detail) =>
            {
                self.toggle_pause(now_ns);
            }
            _ => match self.view {
                View::Calls => self.calls_key(key, now_ns),
                View::Methods => {
                    let names = self.method_names();
                    if key.code == KeyCode::Enter {
                        if let Some(name) = names.get(self.method_sel) {
                            self.show_calls(&format!("method:{name}"));
                        }
                    } else {
                        self.method_sel = step(self.method_sel, names.len(), key, self.page.get());
                    }
                }
                View::Caps => {
                    if key.code == KeyCode::Enter {
                        if let Some(id) = self.state.conns.keys().nth(self.conn_sel) {
                            self.show_calls(&format!("conn:{id}"));
                        }
                    } else {
                        let n = self.state.conns.len();
                        self.conn_sel = step(self.conn_sel, n, key, self.page.get());
                    }
                }
                View::Log => self.log_key(key),
                View::Threads => {
                    if key.code == KeyCode::Enter {
                        if let Some((conn, thread)) = self.state.lanes.keys().nth(self.lane_sel) {
                            self.show_calls(&format!("conn:{conn} thread:{thread}"));
                        }
                    } else {
                        let n = self.state.lanes.len();
                        self.lane_sel = step(self.lane_sel, n, key, self.page.get());
                    }
                }
            },
        }
        Action::None
    }

    /// Enter on a method or a connection: the calls screen, filtered to it.
    fn show_calls(&mut self, filter: &str) {
        if let Ok(f) = Filter::parse(filter) {
            self.filter = f;
            self.view = View::Calls;
            self.focus = Focus::List;
            self.selected = None;
            self.list_offset.set(0);
        }
    }

    fn cycle_view(&mut self, by: usize) {
        let i = View::ALL.iter().position(|v| *v == self.view).unwrap_or(0);
        self.view = View::ALL[(i + by) % View::ALL.len()];
    }

    fn toggle_pause(&mut self, now_ns: u64) {
        self.paused = match self.paused {
            Some(_) => None,
            None => Some(Pause {
                next_id: self.state.calls.back().map_or(0, |r| r.id + 1),
                now_ns,
            }),
        };
    }

    fn prompt_key(&mut self, prompt: Prompt, key: KeyEvent, now_ns: u64) {
        let (mut text, is_filter) = match prompt {
            Prompt::Filter(t) => (t, true),
            Prompt::Search(t) => (t, false),
        };
        match key.code {
            KeyCode::Esc => return,
            KeyCode::Enter => {
                if is_filter {
                    match Filter::parse(&text) {
                        Ok(f) => {
                            self.filter = f;
                            self.list_offset.set(0);
                        }
                        Err(e) => {
                            self.message = Some((e.to_string(), true));
                            self.prompt = Some(Prompt::Filter(text));
                        }
                    }
                } else if !text.is_empty() {
                    self.search = Some(text.to_lowercase());
                    self.search_step(now_ns, true);
                }
                return;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        self.prompt = Some(if is_filter {
            Prompt::Filter(text)
        } else {
            Prompt::Search(text)
        });
    }

    /// Moves to the next (or previous) shown row whose method, names or values contain the
    /// search text.
    fn search_step(&mut self, now_ns: u64, forward: bool) {
        let Some(needle) = self.search.clone() else {
            self.message = Some(("no search yet: / starts one".into(), false));
            return;
        };
        let visible = self.visible(now_ns);
        let Some(cur) = self.selection(&visible) else {
            return;
        };
        let n = visible.len();
        for k in 1..=n {
            let i = if forward {
                (cur + k) % n
            } else {
                (cur + n - k) % n
            };
            let Some(row) = self.state.row(visible[i]) else {
                continue;
            };
            let mut hay = format!(
                "{} {} {} {} {}",
                row.method,
                row.target,
                row.client_thread.as_deref().unwrap_or(""),
                row.server_thread.as_deref().unwrap_or(""),
                row.params.to_text(64)
            );
            if let Some(r) = &row.ret {
                if let Some(v) = &r.results {
                    hay.push(' ');
                    hay.push_str(&v.to_text(64));
                }
                if let Some(ex) = &r.exception {
                    hay.push(' ');
                    hay.push_str(&ex.reason);
                }
            }
            if hay.to_lowercase().contains(&needle) {
                self.selected = Some(visible[i]);
                self.view = View::Calls;
                self.detail_cursor = 0;
                return;
            }
        }
        self.message = Some((format!("not found: {needle}"), true));
    }

    fn calls_key(&mut self, key: KeyEvent, now_ns: u64) {
        if self.focus == Focus::Detail {
            self.detail_key(key, now_ns);
            return;
        }
        let visible = self.visible(now_ns);
        let Some(cur) = self.selection(&visible) else {
            return;
        };
        let page = self.page.get().max(1);
        let last = visible.len() - 1;
        let to = match key.code {
            KeyCode::Up | KeyCode::Char('k') => cur.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => (cur + 1).min(last),
            KeyCode::PageUp => cur.saturating_sub(page),
            KeyCode::PageDown => (cur + page).min(last),
            KeyCode::Home | KeyCode::Char('g') => 0,
            KeyCode::End | KeyCode::Char('G') => {
                self.selected = None;
                return;
            }
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                self.selected = Some(visible[cur]);
                self.focus = Focus::Detail;
                self.detail_cursor = 0;
                return;
            }
            KeyCode::Char('r') => {
                self.selected = Some(visible[cur]);
                self.focus = Focus::Detail;
                self.jump_return(now_ns);
                return;
            }
            KeyCode::Esc => {
                self.selected = None;
                return;
            }
            _ => return,
        };
        if to != cur || self.selected.is_none() {
            self.selected = Some(visible[to]);
            self.detail_cursor = 0;
            self.detail_offset.set(0);
        }
    }

    fn jump_return(&mut self, now_ns: u64) {
        let lines = self.detail_lines(now_ns);
        let want = if lines
            .get(self.detail_cursor)
            .is_some_and(|l| l.path.starts_with("return") || l.path.starts_with("results"))
        {
            "call"
        } else {
            "return"
        };
        if let Some(i) = lines.iter().position(|l| l.path == want) {
            self.detail_cursor = i;
        }
    }

    fn detail_key(&mut self, key: KeyEvent, now_ns: u64) {
        let lines = self.detail_lines(now_ns);
        let last = lines.len().saturating_sub(1);
        let cur = self.detail_cursor.min(last);
        let page = self.page.get().max(1);
        match key.code {
            KeyCode::Esc | KeyCode::Tab => self.focus = Focus::List,
            KeyCode::Up | KeyCode::Char('k') => self.detail_cursor = cur.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.detail_cursor = (cur + 1).min(last),
            KeyCode::PageUp => self.detail_cursor = cur.saturating_sub(page),
            KeyCode::PageDown => self.detail_cursor = (cur + page).min(last),
            KeyCode::Home | KeyCode::Char('g') => self.detail_cursor = 0,
            KeyCode::End | KeyCode::Char('G') => self.detail_cursor = last,
            KeyCode::Char('r') => self.jump_return(now_ns),
            KeyCode::Enter | KeyCode::Char(' ') => {
                if let Some(l) = lines.get(cur)
                    && l.fold.is_some()
                {
                    self.toggle(&l.path);
                }
            }
            KeyCode::Right | KeyCode::Char('l') => {
                if let Some(l) = lines.get(cur)
                    && l.fold == Some(true)
                {
                    self.toggle(&l.path);
                }
            }
            KeyCode::Left | KeyCode::Char('h') => {
                if let Some(l) = lines.get(cur) {
                    if l.fold == Some(false) {
                        self.toggle(&l.path);
                    } else if let Some(parent) = lines[..cur]
                        .iter()
                        .rposition(|p| p.depth < l.depth && p.fold.is_some())
                    {
                        self.detail_cursor = parent;
                    } else {
                        self.focus = Focus::List;
                    }
                }
            }
            _ => {}
        }
    }

    fn toggle(&mut self, path: &str) {
        if !self.toggled.remove(path) {
            self.toggled.insert(path.to_string());
        }
    }

    fn log_key(&mut self, key: KeyEvent) {
        let max = self.state.log.len().saturating_sub(1);
        let page = self.page.get().max(1);
        self.log_back = match key.code {
            KeyCode::Up | KeyCode::Char('k') => (self.log_back + 1).min(max),
            KeyCode::Down | KeyCode::Char('j') => self.log_back.saturating_sub(1),
            KeyCode::PageUp => (self.log_back + page).min(max),
            KeyCode::PageDown => self.log_back.saturating_sub(page),
            KeyCode::Home | KeyCode::Char('g') => max,
            KeyCode::End | KeyCode::Char('G') => 0,
            _ => self.log_back,
        };
    }

    /// Method names in the order the methods screen lists them (ordinary, then long-poll).
    pub(crate) fn method_names(&self) -> Vec<String> {
        let stats = self.state.stats.lock();
        mpspy_engine::stats::long_poll_sections(&stats.methods)
            .into_iter()
            .flat_map(|(_, rows)| rows.into_iter().map(|(n, _)| n.clone()))
            .collect()
    }
}

/// Moves a list selection by a navigation key.
fn step(cur: usize, n: usize, key: KeyEvent, page: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let last = n - 1;
    match key.code {
        KeyCode::Up | KeyCode::Char('k') => cur.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => (cur + 1).min(last),
        KeyCode::PageUp => cur.saturating_sub(page.max(1)),
        KeyCode::PageDown => (cur + page.max(1)).min(last),
        KeyCode::Home | KeyCode::Char('g') => 0,
        KeyCode::End | KeyCode::Char('G') => last,
        _ => cur.min(last),
    }
}
