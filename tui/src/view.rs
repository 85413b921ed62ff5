//! Drawing. Pure functions of the [`App`] and an explicit `now`, so snapshots are stable
//! (nothing here reads a clock).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use mpspy_engine::stats::{LONG_POLL, format_ns};
use mpspy_schema::Direction;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};

use crate::app::{App, Focus, Prompt, View};
use crate::state::{CallRow, LogSource, Status};
use crate::tree::{LineKind, TreeLine};

/// Below this the screen says so instead of drawing a broken layout.
pub(crate) const MIN_WIDTH: u16 = 60;
pub(crate) const MIN_HEIGHT: u16 = 12;

const HIGHLIGHT: Style = Style::new()
    .bg(Color::DarkGray)
    .add_modifier(Modifier::BOLD);

/// Draws the whole screen.
pub fn render(frame: &mut Frame, app: &App, now_ns: u64) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "mpspy: terminal too small ({}x{}); needs {MIN_WIDTH}x{MIN_HEIGHT}.\nStill capturing. q quits.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let now = app.now(now_ns);
    let [header, tabs, body, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    // Filtering walks the whole history: once a frame.
    let visible = app.visible(now_ns);
    render_header(frame, app, header, now);
    render_tabs(frame, app, tabs, visible.len());
    app.page.set(usize::from(body.height.saturating_sub(3)));
    match app.view {
        View::Calls => render_calls(frame, app, body, now_ns, &visible),
        View::Methods => render_methods(frame, app, body),
        View::Caps => render_caps(frame, app, body, now),
        View::Log => render_log(frame, app, body),
        View::Threads => render_threads(frame, app, body, now),
    }
    render_footer(frame, app, footer);
    if app.help {
        render_help(frame, area);
    }
}

fn render_header(frame: &mut Frame, app: &App, area: Rect, now: u64) {
    let s = &app.state;
    let mut first = vec![
        Span::styled(" mpspy ", Style::new().bold().reversed()),
        Span::raw(" "),
        Span::styled(app.opts.title.clone(), Style::new().bold()),
    ];
    match &app.ended {
        Some(why) => first.push(Span::styled(format!("  ·  {why}"), Style::new().yellow())),
        None if app.opts.live => first.push(Span::styled("  ·  live", Style::new().green())),
        None => {}
    }
    let programs = s.programs();
    if !programs.is_empty() {
        first.push(Span::styled(
            format!("  ·  processes: {}", programs.join(", ")),
            Style::new().dim(),
        ));
    }
    let open = s.conns.values().filter(|c| c.closed.is_none()).count();
    let dropped = s.dropped_tap + app.ui_dropped;
    let dropped_style = if dropped > 0 {
        Style::new().white().on_red().bold()
    } else {
        Style::new()
    };
    let mut second = vec![
        Span::raw(format!(
            " conns {open} open/{}  ·  calls {}  ·  {:.1}/s  ·  pending {}  ·  ",
            s.conns.len(),
            s.calls_total,
            s.rate(now),
            s.pending()
        )),
        Span::styled(format!("dropped {dropped}"), dropped_style),
    ];
    // Shown only when there are some: a stuck call is the first thing to look at.
    let stuck = s.stuck();
    if stuck > 0 {
        second.push(Span::raw("  ·  "));
        second.push(Span::styled(
            format!("stuck {stuck} (f status:stuck)"),
            Style::new().white().on_red().bold(),
        ));
    }
    if s.problems > 0 {
        second.push(Span::raw("  ·  "));
        second.push(Span::styled(
            format!("problems {} (4 Log)", s.problems),
            Style::new().red(),
        ));
    }
    if s.evicted > 0 {
        second.push(Span::raw(format!(
            "  ·  {} oldest rows out of history",
            s.evicted
        )));
    }
    frame.render_widget(
        Paragraph::new(vec![Line::from(first), Line::from(second)]),
        area,
    );
}

fn render_tabs(frame: &mut Frame, app: &App, area: Rect, shown: usize) {
    let mut spans = Vec::new();
    for (i, v) in View::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, v.title());
        spans.push(if *v == app.view {
            Span::styled(label, Style::new().black().on_cyan().bold())
        } else {
            Span::raw(label)
        });
    }
    spans.push(Span::raw("  "));
    if let Some(p) = app.paused {
        let newer = app
            .state
            .calls
            .back()
            .map_or(0, |r| (r.id + 1).saturating_sub(p.next_id));
        spans.push(Span::styled(
            format!("PAUSED (+{newer} new, space resumes)"),
            Style::new().black().on_yellow(),
        ));
    } else if app.view == View::Calls {
        spans.push(Span::styled(
            if app.following() {
                "following"
            } else {
                "browsing (End follows)"
            },
            Style::new().dim(),
        ));
    }
    if !app.filter.is_empty() {
        spans.push(Span::styled(
            format!("  filter: {}  ({shown} rows)", app.filter.text()),
            Style::new().magenta(),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_footer(frame: &mut Frame, app: &App, area: Rect) {
    let line = match (&app.prompt, &app.message) {
        (Some(Prompt::Filter(t)), msg) => {
            let mut spans = vec![
                Span::styled("filter> ", Style::new().magenta().bold()),
                Span::raw(format!("{t}▏")),
            ];
            if let Some((m, _)) = msg {
                spans.push(Span::styled(format!("   {m}"), Style::new().red()));
            }
            Line::from(spans)
        }
        (Some(Prompt::Search(t)), _) => Line::from(vec![
            Span::styled("search> ", Style::new().cyan().bold()),
            Span::raw(format!("{t}▏")),
        ]),
        (None, Some((m, err))) => Line::from(Span::styled(
            m.clone(),
            if *err {
                Style::new().red()
            } else {
                Style::new().yellow()
            },
        )),
        (None, None) => {
            let keys = match (app.view, app.focus) {
                (View::Calls, Focus::Detail) => {
                    "↑↓ move  enter fold  ←→ fold/unfold  r call↔return  esc back  ? help  q quit"
                }
                (View::Calls, Focus::List) => {
                    "↑↓ select  enter detail  r return  f filter  / search  space pause  End follow  1-5 views  ? help  q quit"
                }
                (View::Methods | View::Caps | View::Threads, _) => {
                    "↑↓ select  enter its calls  1-5 views  tab next  f filter  / search  ? help  q quit"
                }
                _ => {
                    "↑↓ scroll  End newest  1-5 views  tab next  f filter  / search  ? help  q quit"
                }
            };
            Line::from(Span::styled(keys, Style::new().dim()))
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn status_style(s: &Status) -> Style {
    match s {
        Status::Ok => Style::new().green(),
        Status::Pending => Style::new().yellow(),
        Status::Exception => Style::new().red().bold(),
        Status::Canceled => Style::new().magenta(),
        Status::Disconnected => Style::new().red(),
        Status::Other(_) => Style::new().cyan(),
    }
}

fn render_calls(frame: &mut Frame, app: &App, area: Rect, now_ns: u64, visible: &[u64]) {
    let now = app.now(now_ns);
    let (list_area, detail_area) = if area.height >= 16 {
        let [a, b] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
        (a, Some(b))
    } else {
        (area, None)
    };
    let sel = app.selection(visible);
    let height = usize::from(list_area.height.saturating_sub(3)).max(1);
    // Keep the selection in view; follow keeps the newest at the bottom.
    let mut offset = app.list_offset.get();
    if let Some(s) = sel {
        if s < offset {
            offset = s;
        } else if s >= offset + height {
            offset = s + 1 - height;
        }
    }
    offset = offset.min(visible.len().saturating_sub(height));
    app.list_offset.set(offset);
    let wide = area.width >= 110;
    let rows: Vec<Row> = visible
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .filter_map(|(i, id)| Some((i, app.state.row(*id)?)))
        .map(|(i, r)| {
            let style = if Some(i) == sel {
                HIGHLIGHT
            } else {
                Style::new()
            };
            call_row(app, r, now, wide).style(style)
        })
        .collect();
    let mut widths = vec![Constraint::Length(12), Constraint::Length(4)];
    let mut header = vec!["time", "conn"];
    if wide {
        widths.push(Constraint::Percentage(30));
        header.push("thread (caller → callee)");
    }
    widths.extend([
        Constraint::Min(20),
        Constraint::Length(9),
        Constraint::Length(12),
    ]);
    header.extend(["method", "latency", "status"]);
    let title = format!(" calls {}/{} ", sel.map_or(0, |s| s + 1), visible.len());
    let border = if app.focus == Focus::List {
        Style::new().cyan()
    } else {
        Style::new()
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().bold().underlined()))
        .block(
            Block::new()
                .borders(Borders::TOP)
                .title(title)
                .border_style(border),
        );
    frame.render_widget(table, list_area);
    if visible.is_empty() {
        let msg = if app.filter.is_empty() {
            "no calls yet"
        } else {
            "no calls match the filter (f edits it)"
        };
        let inner = Rect {
            y: list_area.y + 2,
            height: 1,
            ..list_area
        };
        frame.render_widget(Paragraph::new(msg).dim(), inner);
    }
    if let Some(d) = detail_area {
        render_detail(frame, app, d, &app.detail(now_ns, visible));
    }
}

fn call_row<'a>(app: &App, r: &'a CallRow, now: u64, wide: bool) -> Row<'a> {
    let latency = format_ns(r.latency_ns(now));
    let latency = if r.is_open() {
        format!("{latency}…")
    } else {
        latency
    };
    let method = if r.dir == Direction::ServerToClient {
        format!("↩ {}", r.method)
    } else {
        r.method.clone()
    };
    let mut cells = vec![
        Cell::from(app.time(r.t_ns)),
        Cell::from(format!("#{}", r.conn)),
    ];
    if wide {
        cells.push(Cell::from(format!(
            "{} → {}",
            r.client_thread.as_deref().unwrap_or("·"),
            r.server_thread.as_deref().unwrap_or("·")
        )));
    }
    cells.extend([
        Cell::from(method),
        Cell::from(latency),
        Cell::from(Span::styled(
            r.status_text(),
            if r.injected.is_some() {
                status_style(&r.status).reversed()
            } else {
                status_style(&r.status)
            },
        )),
    ]);
    Row::new(cells)
}

fn render_detail(frame: &mut Frame, app: &App, area: Rect, lines: &[TreeLine]) {
    let focused = app.focus == Focus::Detail;
    let block = Block::new()
        .borders(Borders::TOP)
        .title(" detail ")
        .border_style(if focused {
            Style::new().cyan()
        } else {
            Style::new()
        });
    let height = usize::from(area.height.saturating_sub(1)).max(1);
    let cursor = app.detail_cursor.min(lines.len().saturating_sub(1));
    let mut offset = app.detail_offset.get();
    if focused {
        if cursor < offset {
            offset = cursor;
        } else if cursor >= offset + height {
            offset = cursor + 1 - height;
        }
    }
    offset = offset.min(lines.len().saturating_sub(height));
    app.detail_offset.set(offset);
    let text: Vec<Line> = lines
        .iter()
        .enumerate()
        .skip(offset)
        .take(height)
        .map(|(i, l)| {
            let marker = match l.fold {
                Some(true) => "▸ ",
                Some(false) => "▾ ",
                None => "  ",
            };
            let style = match l.kind {
                LineKind::Header => Style::new().bold().cyan(),
                LineKind::Meta => Style::new().dim(),
                LineKind::Field => Style::new(),
                LineKind::Hex => Style::new().dim(),
                LineKind::Reading => Style::new().green(),
                LineKind::Error => Style::new().red(),
            };
            let style = if focused && i == cursor {
                style.patch(HIGHLIGHT)
            } else {
                style
            };
            Line::from(Span::styled(
                format!("{}{marker}{}", "  ".repeat(l.depth), l.text),
                style,
            ))
        })
        .collect();
    frame.render_widget(Paragraph::new(text).block(block), area);
}

fn render_methods(frame: &mut Frame, app: &App, area: Rect) {
    let names = app.method_names();
    // The engine folds into these while we draw: hold them for this screen only (methods are
    // never removed, so every name listed is there).
    let stats = app.state.stats.lock();
    let sel = app.method_sel.min(names.len().saturating_sub(1));
    let [table_area, hist_area] = if area.width >= 140 {
        Layout::horizontal([Constraint::Length(96), Constraint::Min(40)]).areas(area)
    } else {
        Layout::vertical([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area)
    };
    let q = |h: &Histogram<u64>, p: f64| {
        if h.is_empty() {
            "-".to_string()
        } else {
            format_ns(h.value_at_quantile(p))
        }
    };
    let mut rows = Vec::new();
    let mut in_long_poll = false;
    for (i, name) in names.iter().enumerate() {
        let long_poll = LONG_POLL.contains(&name.as_str());
        if long_poll && !in_long_poll {
            in_long_poll = true;
            rows.push(
                Row::new(vec![Cell::from("long-poll (latency is mostly waiting)")])
                    .style(Style::new().dim().italic()),
            );
        }
        let m = &stats.methods[name];
        let errors = Span::styled(
            m.errors.to_string(),
            if m.errors > 0 {
                Style::new().red()
            } else {
                Style::new()
            },
        );
        let mut cancel = m.cancels.to_string();
        if m.unanswered > 0 {
            cancel = format!("{cancel}+{}?", m.unanswered);
        }
        let max = if m.latency.is_empty() {
            "-".to_string()
        } else {
            format_ns(m.latency.max())
        };
        rows.push(
            Row::new(vec![
                Cell::from(name.clone()),
                Cell::from(m.count.to_string()),
                Cell::from(errors),
                Cell::from(cancel),
                Cell::from(q(&m.latency, 0.5)),
                Cell::from(q(&m.latency, 0.9)),
                Cell::from(q(&m.latency, 0.99)),
                Cell::from(max),
            ])
            .style(if i == sel { HIGHLIGHT } else { Style::new() }),
        );
    }
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(6);
    let widths = [
        Constraint::Length(longest.clamp(6, 40) as u16),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let table = Table::new(rows, widths)
        .header(
            Row::new([
                "method", "count", "errors", "cancel", "p50", "p90", "p99", "max",
            ])
            .style(Style::new().bold().underlined()),
        )
        .block(Block::new().borders(Borders::TOP).title(format!(
            " methods ({}; cancel +N? = unanswered at disconnect) ",
            names.len()
        )));
    frame.render_widget(table, table_area);
    let Some(name) = names.get(sel) else {
        frame.render_widget(
            Paragraph::new("no returns yet").block(Block::new().borders(Borders::TOP)),
            hist_area,
        );
        return;
    };
    let m = &stats.methods[name];
    let lines = histogram_lines(&m.latency, hist_area.width.saturating_sub(22) as usize);
    let block = Block::new()
        .borders(Borders::TOP)
        .title(format!(" {name} latency ({} samples) ", m.latency.len()));
    frame.render_widget(Paragraph::new(lines).block(block), hist_area);
}

/// Bucket upper bounds on the 1-2-5 series (1ns, 2ns, 5ns, 10ns, …): round numbers a reader
/// can compare at a glance.
fn bucket_bound(i: u32) -> u64 {
    [1u64, 2, 5][(i % 3) as usize].saturating_mul(10u64.saturating_pow(i / 3))
}

/// A latency histogram as text bars on 1-2-5 buckets: `≤ 200.0µs ████ 12`.
pub(crate) fn histogram_lines(h: &Histogram<u64>, bar_width: usize) -> Vec<Line<'static>> {
    if h.is_empty() {
        return vec![Line::from("no latencies recorded")];
    }
    let bucket_of = |v: u64| (0..).find(|&i| v <= bucket_bound(i)).unwrap_or(0);
    let (lo, hi) = (bucket_of(h.min().max(1)), bucket_of(h.max()));
    // Every bucket between the extremes, empty ones too, so the shape is honest.
    let mut counts = vec![0u64; (hi - lo + 1) as usize];
    for v in h.iter_recorded() {
        let b = bucket_of(h.highest_equivalent(v.value_iterated_to()).max(1)).clamp(lo, hi);
        counts[(b - lo) as usize] += v.count_at_value();
    }
    let peak = counts.iter().copied().max().unwrap_or(1).max(1);
    counts
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let len = (n as f64 / peak as f64 * bar_width as f64).ceil() as usize;
            Line::from(vec![
                Span::raw(format!("≤{:>8} ", format_ns(bucket_bound(lo + i as u32)))),
                Span::styled("█".repeat(len.min(bar_width)), Style::new().cyan()),
                Span::raw(format!(" {n}")),
            ])
        })
        .collect()
}

fn render_caps(frame: &mut Frame, app: &App, area: Rect, now: u64) {
    let conns: Vec<_> = app.state.conns.values().collect();
    let sel = app.conn_sel.min(conns.len().saturating_sub(1));
    let [list_area, caps_area] = if area.width >= 150 {
        Layout::horizontal([Constraint::Length(60), Constraint::Min(80)]).areas(area)
    } else {
        Layout::vertical([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(area)
    };
    let rows: Vec<Row> = conns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let leaks = c.left_open.iter().filter(|l| l.is_leak()).count();
            let state = match &c.closed {
                Some((_, reason)) => Span::styled(
                    format!("closed: {reason}"),
                    if leaks > 0 {
                        Style::new().red()
                    } else {
                        Style::new().dim()
                    },
                ),
                None => Span::styled("open", Style::new().green()),
            };
            Row::new(vec![
                Cell::from(format!("#{}", c.id)),
                Cell::from(c.label.clone()),
                Cell::from(c.live.len().to_string()),
                Cell::from(state),
            ])
            .style(if i == sel { HIGHLIGHT } else { Style::new() })
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Min(20),
            Constraint::Length(5),
            Constraint::Length(22),
        ],
    )
    .header(Row::new(["conn", "label", "live", "state"]).style(Style::new().bold().underlined()))
    .block(Block::new().borders(Borders::TOP).title(" connections "));
    frame.render_widget(table, list_area);

    let Some(c) = conns.get(sel) else {
        frame.render_widget(
            Paragraph::new("no connections yet").block(Block::new().borders(Borders::TOP)),
            caps_area,
        );
        return;
    };
    let mut rows = Vec::new();
    let head = |t: String| Row::new(vec![Cell::from(t)]).style(Style::new().bold());
    rows.push(head(format!("live ({})", c.live.len())));
    for cap in c.live.values() {
        rows.push(Row::new(vec![
            Cell::from(format!("  {}", cap.info.cap)),
            Cell::from(c.holder(cap.info.host)),
            Cell::from(cap.info.refs.to_string()),
            Cell::from(format_ns(now.saturating_sub(cap.created_ns))),
            Cell::from(if cap.info.destroyed {
                Span::styled("destroyed, not released", Style::new().yellow())
            } else {
                Span::raw("live")
            }),
        ]));
    }
    if c.closed.is_some() {
        rows.push(head(format!("at disconnect ({})", c.left_open.len())));
        for cap in &c.left_open {
            let (text, style) = if cap.is_leak() {
                ("LEAK: never destroyed", Style::new().red().bold())
            } else if cap.info.destroyed {
                ("destroyed, never released", Style::new().yellow())
            } else {
                ("released by the disconnect", Style::new().yellow())
            };
            rows.push(
                Row::new(vec![
                    Cell::from(format!("  {}", cap.info.cap)),
                    Cell::from(c.holder(cap.info.host)),
                    Cell::from(cap.info.refs.to_string()),
                    Cell::from(format_ns(
                        c.closed
                            .as_ref()
                            .map_or(now, |(t, _)| *t)
                            .saturating_sub(cap.created_ns),
                    )),
                    Cell::from(text),
                ])
                .style(style),
            );
        }
        for p in &c.pending_at_close {
            rows.push(
                Row::new(vec![
                    Cell::from(format!("  q{} {}", p.question, p.method)),
                    Cell::from(""),
                    Cell::from(""),
                    Cell::from(format_ns(p.elapsed_ns)),
                    Cell::from("unanswered call"),
                ])
                .style(Style::new().red()),
            );
        }
    }
    rows.push(head(format!("released ({})", c.released_total)));
    for cap in c.released.iter().rev() {
        let lifetime = cap
            .released_ns
            .unwrap_or(now)
            .saturating_sub(cap.created_ns);
        rows.push(
            Row::new(vec![
                Cell::from(format!("  {}", cap.info.cap)),
                Cell::from(c.holder(cap.info.host)),
                Cell::from("0"),
                Cell::from(format_ns(lifetime)),
                Cell::from(if cap.info.destroyed {
                    "destroy → release"
                } else {
                    "release only"
                }),
            ])
            .style(Style::new().dim()),
        );
    }
    let table = Table::new(
        rows,
        [
            Constraint::Min(22),
            Constraint::Length(20),
            Constraint::Length(4),
            Constraint::Length(9),
            Constraint::Length(26),
        ],
    )
    .header(
        Row::new(["capability", "held by", "refs", "age", "state"])
            .style(Style::new().bold().underlined()),
    )
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(format!(" #{} capabilities ", c.id)),
    );
    frame.render_widget(table, caps_area);
}

fn render_log(frame: &mut Frame, app: &App, area: Rect) {
    let height = usize::from(area.height.saturating_sub(1)).max(1);
    let log = &app.state.log;
    let end = log.len().saturating_sub(app.log_back);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = log
        .range(start..end)
        .map(|l| {
            let (tag, style) = match l.source {
                LogSource::Stdout => ("out  ", Style::new()),
                LogSource::Stderr => ("err  ", Style::new().yellow()),
                LogSource::Mpspy => ("mpspy", Style::new().cyan()),
            };
            let text_style = if l.problem {
                Style::new().red()
            } else {
                Style::new()
            };
            Line::from(vec![
                Span::styled(format!("{} ", app.time(l.t_ns)), Style::new().dim()),
                Span::styled(format!("{tag} "), style),
                Span::styled(l.text.clone(), text_style),
            ])
        })
        .collect();
    let title = format!(
        " log: program output and mpspy notices ({} lines{}) ",
        app.state.log_total,
        if app.log_back > 0 {
            format!(", {} below", app.log_back)
        } else {
            String::new()
        }
    );
    frame.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::TOP).title(title)),
        area,
    );
}

/// Thread lanes: per connection and callee thread (`Proxy.Context.thread`), its calls, the
/// time it spent in them, who called, and what it is running now.
fn render_threads(frame: &mut Frame, app: &App, area: Rect, now: u64) {
    let lanes = &app.state.lanes;
    let sel = app.lane_sel.min(lanes.len().saturating_sub(1));
    // What each lane runs now: the pending calls, grouped once per frame, oldest first.
    let mut pending: Vec<&CallRow> = app.state.open_rows().collect();
    pending.sort_by_key(|r| r.id);
    let mut running: BTreeMap<(u32, &str), Vec<String>> = BTreeMap::new();
    for r in pending {
        if let Some(thread) = r.server_thread.as_deref() {
            running.entry((r.conn, thread)).or_default().push(format!(
                "{} {}…",
                r.method,
                format_ns(r.latency_ns(now))
            ));
        }
    }
    let rows: Vec<Row> = lanes
        .iter()
        .enumerate()
        .map(|(i, ((conn, thread), lane))| {
            let busy = match running.get(&(*conn, thread.as_str())) {
                Some(calls) => Span::styled(calls.join(", "), Style::new().yellow()),
                None => Span::raw("idle"),
            };
            Row::new(vec![
                Cell::from(format!("#{conn}")),
                Cell::from(thread.clone()),
                Cell::from(lane.callers.join(", ")),
                Cell::from(lane.calls.to_string()),
                Cell::from(format_ns(lane.busy_ns)),
                Cell::from(busy),
                Cell::from(format!("{} at {}", lane.last.0, app.time(lane.last.1))),
            ])
            .style(if i == sel { HIGHLIGHT } else { Style::new() })
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Percentage(20),
            Constraint::Percentage(18),
            Constraint::Length(6),
            Constraint::Length(9),
            Constraint::Percentage(24),
            Constraint::Min(20),
        ],
    )
    .header(
        Row::new([
            "conn",
            "thread (callee)",
            "callers",
            "calls",
            "busy",
            "now",
            "last call",
        ])
        .style(Style::new().bold().underlined()),
    )
    .block(Block::new().borders(Borders::TOP).title(format!(
        " thread lanes from Proxy.Context ({}) ",
        lanes.len()
    )));
    frame.render_widget(table, area);
    if lanes.is_empty() {
        let inner = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        frame.render_widget(
            Paragraph::new("no calls with a Proxy.Context thread yet").dim(),
            inner,
        );
    }
}

const HELP: &str = "\
views     1 calls  2 methods  3 capabilities  4 log  5 threads   tab/shift-tab cycle
          enter on a method, a connection or a thread: its calls (filtered)
calls     ↑↓ j k  PgUp PgDn  g/Home first  G/End follow newest  esc follow
          enter/→ detail  r jump call ↔ return  space pause/resume
detail    ↑↓ move  enter/space fold  → unfold  ← fold or parent  esc back
filter    f   e.g.  method:Mining.* status:error latency>10ms conn:2 thread:pyclient
          keys: method: iface: status:(ok,error,canceled,pending,disconnected,stuck)
                latency> >= < <=  conn:  thread:  cap:   words match names
          -term or !term negates; an empty filter shows everything
search    /text  then n / N: next / previous call whose names or values contain it
quit      q   (live: ctrl-c interrupts the program; q leaves and stops it)
any key closes this help";

fn render_help(frame: &mut Frame, area: Rect) {
    let width = area.width.min(92);
    let height = area.height.min(HELP.lines().count() as u16 + 2);
    let r = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(Text::from(HELP)).block(
            Block::bordered()
                .title(" keys ")
                .border_style(Style::new().cyan()),
        ),
        r,
    );
}
