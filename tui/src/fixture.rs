//! A fixed session for tests: two connections, ordinary calls, an exception, a long poll cut by
//! a disconnect, capabilities created, destroyed, released and left open. Times are fixed so
//! snapshots are stable.

use mpspy_schema::event::{CallEvent, CapInfo, Peer, PendingCall, ReturnEvent, Side};
use mpspy_schema::rpc::ExceptionInfo;
use mpspy_schema::value::{CapValue, Value};
use mpspy_schema::{Direction, Event, EventKind};

/// 2026-11-23 12:00:00 UTC.
pub(crate) const START_UNIX_NS: u64 = 1_795_435_200_000_000_000;
const MS: u64 = 1_000_000;

struct Builder {
    events: Vec<Event>,
    question: u32,
}

impl Builder {
    fn push(&mut self, t_ns: u64, conn: u32, dir: Option<Direction>, kind: EventKind) {
        let seq = self.events.len() as u64;
        self.events.push(Event {
            seq,
            t_ns,
            conn,
            dir,
            kind,
        });
    }

    /// The seq of question `q`'s call on `conn`, as the engine pairs them.
    fn call_seq(&self, conn: u32, q: u32) -> Option<u64> {
        self.events.iter().rev().find_map(|e| match &e.kind {
            EventKind::Call(c) if c.question == q && e.conn == conn => Some(e.seq),
            EventKind::Bootstrap { question, .. } if *question == q && e.conn == conn => {
                Some(e.seq)
            }
            _ => None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        t: u64,
        conn: u32,
        iface: &str,
        method: &str,
        target: &str,
        params: Value,
        thread: &str,
    ) -> u32 {
        let q = self.question;
        self.question += 1;
        self.push(
            t,
            conn,
            Some(Direction::ClientToServer),
            EventKind::Call(CallEvent {
                question: q,
                interface: iface.into(),
                method: method.into(),
                interface_id: 0x1234,
                method_id: 0,
                target: target.into(),
                thread: Some("b-capnp-loop".into()),
                callback_thread: Some(thread.into()),
                parent_seq: None,
                params,
                cap_table: Vec::new(),
                bytes: 96,
            }),
        );
        q
    }

    fn ret(&mut self, t: u64, conn: u32, q: u32, iface: &str, method: &str, results: Value) {
        let call_seq = self.call_seq(conn, q);
        self.push(
            t,
            conn,
            Some(Direction::ServerToClient),
            EventKind::Return(ReturnEvent {
                answer: q,
                call_seq,
                interface: iface.into(),
                method: method.into(),
                outcome: "results".into(),
                latency_ns: None,
                results: Some(results),
                exception: None,
                thread: Some("b-capnp-loop".into()),
                cap_table: Vec::new(),
                bytes: 64,
            }),
        );
        // Latency as the engine computes it: from the call's time.
        let call_t = self
            .events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::Call(c) if c.question == q && e.conn == conn => Some(e.t_ns),
                EventKind::Bootstrap { question, .. } if *question == q && e.conn == conn => {
                    Some(e.t_ns)
                }
                _ => None,
            })
            .unwrap_or(t);
        if let Some(Event {
            kind: EventKind::Return(r),
            ..
        }) = self.events.last_mut()
        {
            r.latency_ns = Some(t - call_t);
        }
    }

    fn cap(&mut self, t: u64, conn: u32, name: &str, iface: &str, id: u32) {
        self.push(
            t,
            conn,
            Some(Direction::ServerToClient),
            EventKind::CapCreated(cap_info(name, iface, id, false)),
        );
    }
}

fn cap_info(name: &str, iface: &str, id: u32, destroyed: bool) -> CapInfo {
    CapInfo {
        cap: name.into(),
        interface: Some(iface.into()),
        host: Side::Server,
        export_id: id,
        refs: 1,
        destroyed,
        // Echo and BlockTemplate have `destroy`; Init, Rpc and Mining are only released.
        destroyable: matches!(iface, "Echo" | "BlockTemplate"),
        destroy_pending: false,
    }
}

fn cap_value(name: &str, iface: &str) -> Value {
    Value::Struct(vec![(
        "result".into(),
        Value::Cap(CapValue {
            index: 0,
            interface: Some(iface.into()),
            name: Some(name.into()),
        }),
    )])
}

fn context(thread: &str) -> (String, Value) {
    (
        "context".into(),
        Value::Struct(vec![
            (
                "thread".into(),
                Value::Cap(CapValue {
                    index: 0,
                    interface: Some("Thread".into()),
                    name: Some(format!("Thread#{thread}")),
                }),
            ),
            (
                "callbackThread".into(),
                Value::Cap(CapValue {
                    index: 1,
                    interface: Some("Thread".into()),
                    name: Some("Thread#1".into()),
                }),
            ),
        ]),
    )
}

/// The genesis block header, a real 80-byte value.
pub(crate) fn genesis_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(80);
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&[0; 32]);
    let mut merkle = hex_bytes("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
    merkle.reverse();
    h.extend_from_slice(&merkle);
    h.extend_from_slice(&1_231_006_505u32.to_le_bytes());
    h.extend_from_slice(&0x1d00_ffffu32.to_le_bytes());
    h.extend_from_slice(&2_083_236_893u32.to_le_bytes());
    h
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The fixed session.
pub(crate) fn session() -> Vec<Event> {
    let mut b = Builder {
        events: Vec::new(),
        question: 0,
    };
    b.push(
        0,
        0,
        None,
        EventKind::Session {
            tool: "mpspy test".into(),
            source: "live".into(),
            schemas: "auto".into(),
            start_unix_ns: Some(START_UNIX_NS),
        },
    );
    let node = Peer {
        name: "bitcoin-node".into(),
        pid: Some(4242),
        argv: vec!["bitcoin-node".into(), "-regtest".into()],
    };
    // Connection 1: bitcoin-cli asks for the block count.
    b.push(
        10 * MS,
        1,
        None,
        EventKind::ConnOpened {
            label: "bitcoin-cli (5001) → bitcoin-node (unix:/tmp/r/regtest/node.sock)".into(),
            client: Some(Peer {
                name: "bitcoin-cli".into(),
                pid: Some(5001),
                argv: Vec::new(),
            }),
            server: Some(node.clone()),
        },
    );
    b.push(
        11 * MS,
        1,
        Some(Direction::ClientToServer),
        EventKind::Bootstrap {
            question: 0,
            bytes: 32,
        },
    );
    b.ret(
        11 * MS + 40_000,
        1,
        0,
        "",
        "bootstrap",
        cap_value("Init#0", "Init"),
    );
    b.question = 1;
    let q = b.call(
        12 * MS,
        1,
        "Init",
        "makeRpc",
        "Init#0",
        Value::Struct(vec![context("2")]),
        "b-cli-main",
    );
    b.cap(12 * MS + 300_000, 1, "Rpc#1", "Rpc", 1);
    b.ret(
        12 * MS + 300_000,
        1,
        q,
        "Init",
        "makeRpc",
        cap_value("Rpc#1", "Rpc"),
    );
    let q = b.call(
        13 * MS,
        1,
        "Rpc",
        "executeRpc",
        "Rpc#1",
        Value::Struct(vec![
            context("2"),
            (
                "request".into(),
                Value::Text(r#"{"method":"getblockcount","params":[],"id":1}"#.into()),
            ),
            ("uri".into(), Value::Text(String::new())),
            ("user".into(), Value::Text("__cookie__".into())),
        ]),
        "b-cli-main",
    );
    b.ret(
        13 * MS + 2_400_000,
        1,
        q,
        "Rpc",
        "executeRpc",
        Value::Struct(vec![(
            "result".into(),
            Value::Text(r#"{"result":5,"error":null,"id":1}"#.into()),
        )]),
    );
    b.push(
        20 * MS,
        1,
        Some(Direction::ClientToServer),
        EventKind::CapReleased {
            cap: cap_info("Rpc#1", "Rpc", 1, true),
            lifetime_ns: 7_700_000,
        },
    );
    b.push(
        21 * MS,
        1,
        None,
        EventKind::ConnClosed {
            reason: "eof from client".into(),
            pending_calls: Vec::new(),
            live_caps: Vec::new(),
        },
    );
    // Connection 2: a mining client.
    b.push(
        100 * MS,
        2,
        None,
        EventKind::ConnOpened {
            label: "pyclient (6001) → bitcoin-node (unix:/tmp/r/regtest/node.sock)".into(),
            client: Some(Peer {
                name: "pyclient".into(),
                pid: Some(6001),
                argv: Vec::new(),
            }),
            server: Some(node),
        },
    );
    b.question = 0;
    let q = b.call(
        101 * MS,
        2,
        "Init",
        "makeEcho",
        "Init#0",
        Value::Struct(vec![context("3")]),
        "pyclient-main",
    );
    b.cap(101 * MS + 200_000, 2, "Echo#1", "Echo", 1);
    b.ret(
        101 * MS + 200_000,
        2,
        q,
        "Init",
        "makeEcho",
        cap_value("Echo#1", "Echo"),
    );
    for (i, text) in ["hello", "", "ipc-trace"].iter().enumerate() {
        let t = (102 + i as u64) * MS;
        let q = b.call(
            t,
            2,
            "Echo",
            "echo",
            "Echo#1",
            Value::Struct(vec![
                context("3"),
                ("echo".into(), Value::Text(text.to_string())),
            ]),
            "pyclient-main",
        );
        b.ret(
            t + 120_000 + i as u64 * 30_000,
            2,
            q,
            "Echo",
            "echo",
            Value::Struct(vec![("result".into(), Value::Text(text.to_string()))]),
        );
    }
    let q = b.call(
        110 * MS,
        2,
        "Echo",
        "destroy",
        "Echo#1",
        Value::Struct(vec![context("3")]),
        "pyclient-main",
    );
    b.ret(
        110 * MS + 90_000,
        2,
        q,
        "Echo",
        "destroy",
        Value::Struct(Vec::new()),
    );
    b.push(
        111 * MS,
        2,
        Some(Direction::ClientToServer),
        EventKind::CapReleased {
            cap: cap_info("Echo#1", "Echo", 1, true),
            lifetime_ns: 9_800_000,
        },
    );
    let q = b.call(
        120 * MS,
        2,
        "Init",
        "makeMining",
        "Init#0",
        Value::Struct(vec![context("3")]),
        "pyclient-main",
    );
    b.cap(120 * MS + 150_000, 2, "Mining#2", "Mining", 2);
    b.ret(
        120 * MS + 150_000,
        2,
        q,
        "Init",
        "makeMining",
        cap_value("Mining#2", "Mining"),
    );
    let q = b.call(
        121 * MS,
        2,
        "Mining",
        "getTip",
        "Mining#2",
        Value::Struct(vec![context("3")]),
        "pyclient-main",
    );
    let mut hash = hex_bytes("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000");
    hash.truncate(32);
    b.ret(
        121 * MS + 410_000,
        2,
        q,
        "Mining",
        "getTip",
        Value::Struct(vec![
            (
                "result".into(),
                Value::Struct(vec![
                    ("height".into(), Value::Int(5)),
                    ("hash".into(), Value::Data(hash)),
                ]),
            ),
            ("hasResult".into(), Value::Bool(true)),
        ]),
    );
    let q = b.call(
        122 * MS,
        2,
        "Mining",
        "createNewBlock",
        "Mining#2",
        Value::Struct(vec![
            (
                "options".into(),
                Value::Struct(vec![
                    ("useMempool".into(), Value::Bool(true)),
                    ("blockReservedWeight".into(), Value::UInt(8000)),
                    ("coinbaseOutputMaxAdditionalSigops".into(), Value::UInt(400)),
                ]),
            ),
            ("cooldown".into(), Value::Bool(false)),
        ]),
        "pyclient-main",
    );
    b.cap(135 * MS, 2, "BlockTemplate#3", "BlockTemplate", 3);
    b.ret(
        135 * MS,
        2,
        q,
        "Mining",
        "createNewBlock",
        cap_value("BlockTemplate#3", "BlockTemplate"),
    );
    let q = b.call(
        136 * MS,
        2,
        "BlockTemplate",
        "getBlockHeader",
        "BlockTemplate#3",
        Value::Struct(vec![context("3")]),
        "pyclient-main",
    );
    b.ret(
        136 * MS + 250_000,
        2,
        q,
        "BlockTemplate",
        "getBlockHeader",
        Value::Struct(vec![("result".into(), Value::Data(genesis_header()))]),
    );
    let q = b.call(
        137 * MS,
        2,
        "Mining",
        "checkBlock",
        "Mining#2",
        Value::Struct(vec![
            context("3"),
            ("block".into(), Value::Data(vec![0x00, 0x01])),
        ]),
        "pyclient-main",
    );
    b.push(
        137 * MS + 700_000,
        2,
        Some(Direction::ServerToClient),
        EventKind::Return(ReturnEvent {
            answer: q,
            call_seq: b.call_seq(2, q),
            interface: "Mining".into(),
            method: "checkBlock".into(),
            outcome: "exception".into(),
            latency_ns: Some(700_000),
            results: None,
            exception: Some(ExceptionInfo {
                kind: "failed",
                reason: "remote exception: std::exception: SpanReader::read(): end of data: iostream error".into(),
                trace: String::new(),
            }),
            thread: Some("b-capnp-loop".into()),
            cap_table: Vec::new(),
            bytes: 180,
        }),
    );
    let q = b.call(
        140 * MS,
        2,
        "Mining",
        "waitTipChanged",
        "Mining#2",
        Value::Struct(vec![
            context("3"),
            ("currentTip".into(), Value::Data(vec![0xab; 32])),
            ("timeout".into(), Value::Float(60000.0)),
        ]),
        "pyclient-main",
    );
    b.push(
        2_140 * MS,
        2,
        None,
        EventKind::ConnClosed {
            reason: "process exited".into(),
            pending_calls: vec![PendingCall {
                call_seq: b.call_seq(2, q).expect("the call was pushed"),
                dir: Direction::ClientToServer,
                question: q,
                method: "Mining.waitTipChanged".into(),
                elapsed_ns: 2_000 * MS,
                thread: None,
            }],
            live_caps: vec![
                cap_info("Mining#2", "Mining", 2, false),
                cap_info("BlockTemplate#3", "BlockTemplate", 3, false),
            ],
        },
    );
    b.events
}
