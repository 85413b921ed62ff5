//! Call chains against an in-process server over a byte pipe: the runtime's whole session
//! (construct with our ThreadMap, makeThread, Context, destroy before release) as a server
//! sees it, results out of the response, and each way a chain fails.

use std::cell::RefCell;
use std::rc::Rc;

use capnp::Error;
use mpspy_schema::decode::{Lookup, Walker};
use mpspy_schema::value::CapValue;
use mpspy_schema::wire::Message;
use mpspy_schema::{SchemaSet, Value};
use serde_json::json;
use tokio::sync::Notify;

use crate::ClientError;
use crate::dispatch::{self, Interface, std_exception};
use crate::net;
use crate::runtime::{self, Call, Outcome, PlanError, Repeat};
use crate::schema::echo_capnp::echo;
use crate::schema::init_capnp::init;
use crate::threads::{self, ConnThreads, Names};

/// What the server saw, in order.
type Log = Rc<RefCell<Vec<String>>>;

fn push(log: &Log, line: impl Into<String>) {
    log.borrow_mut().push(line.into());
}

/// How the server's `Echo.echo` behaves.
#[derive(Clone)]
enum Echoes {
    /// Returns the text.
    Back,
    /// Fails with a C++-style exception.
    Throws,
    /// Never returns; says so on the Notify (the test then cuts the connection).
    Hangs(Rc<Notify>),
}

struct InitImpl {
    conn: Rc<ConnThreads>,
    log: Log,
    echoes: Echoes,
    /// Call back into the client during construct: makeThread on its ThreadMap, then getName.
    call_back: bool,
}

impl Interface for InitImpl {
    type Client = init::Client;
    const NAME: &'static str = "capnp/init.capnp:Init";
    const METHODS: u16 = 5;
}

impl init::Server for InitImpl {
    async fn construct(
        self: Rc<Self>,
        params: init::ConstructParams,
        mut results: init::ConstructResults,
    ) -> Result<(), Error> {
        push(&self.log, "construct");
        if self.call_back {
            let theirs = params.get()?.get_thread_map()?;
            let mut req = theirs.make_thread_request();
            req.get().set_name("server-callback");
            let thread = req.send().promise.await?.get()?.get_result()?;
            let reply = thread.get_name_request().send().promise.await?;
            push(
                &self.log,
                format!("their thread {}", reply.get()?.get_result()?.to_str()?),
            );
        }
        results
            .get()
            .set_thread_map(threads::thread_map(self.conn.clone()));
        Ok(())
    }

    async fn make_echo(
        self: Rc<Self>,
        params: init::MakeEchoParams,
        mut results: init::MakeEchoResults,
    ) -> Result<(), Error> {
        // Fails unless Context.thread is a Thread our ThreadMap made.
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        push(&self.log, "makeEcho");
        results.get().set_result(dispatch::new_client(EchoImpl {
            conn: self.conn.clone(),
            log: self.log.clone(),
            echoes: self.echoes.clone(),
        }));
        Ok(())
    }
}

struct EchoImpl {
    conn: Rc<ConnThreads>,
    log: Log,
    echoes: Echoes,
}

impl Interface for EchoImpl {
    type Client = echo::Client;
    const NAME: &'static str = "capnp/echo.capnp:Echo";
    const METHODS: u16 = 2;
}

impl Drop for EchoImpl {
    fn drop(&mut self) {
        push(&self.log, "Echo released");
    }
}

impl echo::Server for EchoImpl {
    async fn destroy(
        self: Rc<Self>,
        params: echo::DestroyParams,
        _: echo::DestroyResults,
    ) -> Result<(), Error> {
        let _turn = self.conn.enter(params.get()?.get_context()?).await?;
        push(&self.log, "destroy");
        Ok(())
    }

    async fn echo(
        self: Rc<Self>,
        params: echo::EchoParams,
        mut results: echo::EchoResults,
    ) -> Result<(), Error> {
        let params = params.get()?;
        let _turn = self.conn.enter(params.get_context()?).await?;
        let text = params.get_echo()?.to_string()?;
        push(&self.log, format!("echo {text}"));
        match &self.echoes {
            Echoes::Back => {
                results.get().set_result(&text[..]);
                Ok(())
            }
            Echoes::Throws => Err(std_exception("no echo today")),
            Echoes::Hangs(told) => {
                told.notify_one();
                std::future::pending().await
            }
        }
    }
}

fn master() -> std::sync::Arc<SchemaSet> {
    mpspy_schema::sets::builtin("master").unwrap()
}

fn plan(steps: &[(&str, serde_json::Value)]) -> Vec<Call> {
    let set = master();
    steps
        .iter()
        .map(|(step, args)| Call::plan(&set, step, args).unwrap())
        .collect()
}

/// How a chain against the test server went: the runtime's answer and the server's log.
struct Run {
    result: Result<Outcome, ClientError>,
    log: Vec<String>,
}

/// Runs `calls` against a fresh server over an in-process pipe. With `Echoes::Hangs`, the
/// server's end is dropped (the connection cut) once the hanging echo has started.
fn run(calls: &[Call], echoes: Echoes, call_back: bool, repeat: Repeat) -> Run {
    let log: Log = Rc::default();
    let server_log = log.clone();
    let result = crate::block_on(async move {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let init = dispatch::new_client(InitImpl {
            conn: ConnThreads::new(Names::new("server")),
            log: server_log,
            echoes: echoes.clone(),
            call_back,
        });
        let server = tokio::task::spawn_local(net::rpc_system(theirs, init.client));
        let chain = runtime::run_chain(ours, Names::new("mpspy-test"), calls, repeat);
        match echoes {
            Echoes::Hangs(told) => {
                let cut = async {
                    told.notified().await;
                    server.abort();
                };
                futures::join!(chain, cut).0
            }
            // The server ends when the client has closed, after handling what came before.
            _ => {
                let result = chain.await;
                let _ = server.await;
                result
            }
        }
    })
    .unwrap();
    let log = log.take();
    Run { result, log }
}

fn decoded(outcome: &Outcome) -> Value {
    let set = master();
    let sets = [&*set];
    outcome.results.decode(Lookup::new(&sets))
}

#[test]
fn a_chain_runs_like_a_libmultiprocess_client_and_returns_the_results() {
    let calls = plan(&[
        ("Init.makeEcho", json!({})),
        ("Echo.echo", json!({"echo": "hi"})),
    ]);
    let run = run(&calls, Echoes::Back, false, Repeat::default());
    let outcome = run.result.unwrap();
    assert_eq!(
        serde_json::to_value(decoded(&outcome)).unwrap(),
        json!({"result": "hi"})
    );
    assert_eq!(outcome.round_trips_ns.len(), 1);
    // makeEcho and echo ran on a server Thread (Context.thread filled, made by makeThread), and
    // the Echo was destroyed before it was released.
    assert_eq!(
        run.log,
        [
            "construct",
            "makeEcho",
            "echo hi",
            "destroy",
            "Echo released"
        ]
    );
}

#[test]
fn the_server_can_call_back_into_the_clients_thread_map() {
    let calls = plan(&[("Init.makeEcho", json!({}))]);
    let run = run(&calls, Echoes::Back, true, Repeat::default());
    run.result.unwrap();
    let pid = std::process::id();
    assert_eq!(
        run.log[..2],
        [
            "construct".to_string(),
            format!("their thread mpspy-test-{pid}/1 (from server-callback)")
        ]
    );
}

#[test]
fn a_returned_capability_comes_back_as_a_capability() {
    let calls = plan(&[("Init.makeEcho", json!({}))]);
    let outcome = run(&calls, Echoes::Back, false, Repeat::default())
        .result
        .unwrap();
    assert_eq!(
        decoded(&outcome),
        Value::Struct(vec![(
            "result".into(),
            Value::Cap(CapValue {
                index: 0,
                interface: Some("Echo".into()),
                name: None,
            })
        )])
    );
}

#[test]
fn the_last_step_repeats_on_parallel_streams() {
    let calls = plan(&[
        ("Init.makeEcho", json!({})),
        ("Echo.echo", json!({"echo": "again"})),
    ]);
    let repeat = Repeat {
        count: 3,
        warmup: 1,
        concurrency: 2,
    };
    let run = run(&calls, Echoes::Back, false, repeat);
    let outcome = run.result.unwrap();
    assert_eq!(outcome.round_trips_ns.len(), 6, "measured calls only");
    assert_eq!(run.log.iter().filter(|l| *l == "echo again").count(), 8);
    assert_eq!(run.log.last().unwrap(), "Echo released");
}

#[test]
fn an_exception_names_the_call_and_what_was_made_is_still_destroyed() {
    let calls = plan(&[
        ("Init.makeEcho", json!({})),
        ("Echo.echo", json!({"echo": "x"})),
    ]);
    let run = run(&calls, Echoes::Throws, false, Repeat::default());
    match run.result {
        Err(ClientError::Exception {
            method,
            kind,
            reason,
        }) => {
            assert_eq!(method, "Echo.echo");
            assert_eq!(kind, "failed");
            assert_eq!(reason, "std::exception: no echo today");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(run.log[2..], ["echo x", "destroy", "Echo released"]);
}

#[test]
fn a_connection_cut_mid_call_is_a_connection_error_for_that_call() {
    let calls = plan(&[
        ("Init.makeEcho", json!({})),
        ("Echo.echo", json!({"echo": "lost"})),
    ]);
    let run = run(
        &calls,
        Echoes::Hangs(Rc::default()),
        false,
        Repeat::default(),
    );
    match run.result {
        Err(e @ ClientError::Connection { .. }) => assert_eq!(
            e.to_string(),
            "client error: Echo.echo: the connection failed: Peer disconnected."
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_method_is_refused_in_the_cpp_runtimes_words() {
    // Init.makeRpc is in the schema, but this server's Init does not implement it.
    let calls = plan(&[("Init.makeRpc", json!({}))]);
    let run = run(&calls, Echoes::Back, false, Repeat::default());
    match run.result {
        Err(ClientError::Exception { method, kind, .. }) => {
            assert_eq!(
                (method.as_str(), kind.as_str()),
                ("Init.makeRpc", "unimplemented")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn planning_fills_the_context_by_name_and_plans_destroy() {
    let set = master();
    let echo = Call::plan(&set, "Echo.echo", &json!({"echo": "x"})).unwrap();
    assert_eq!(echo.name, "Echo.echo");
    assert!(echo.next.is_none() && echo.destroy.is_none());
    // The params carry Context.thread and Context.callbackThread as capabilities 0 and 1.
    let sets = [&*set];
    let (message, _) = Message::parse(&echo.params).unwrap();
    let params = set
        .interfaces()
        .find(|(_, i)| i.name == "Echo")
        .and_then(|(_, i)| i.methods.iter().find(|m| m.name == "echo"))
        .unwrap()
        .params;
    let v = Walker::new(Lookup::new(&sets)).decode(params, message.root().unwrap());
    let cap = |c: &Value| match c {
        Value::Cap(c) => Some(c.index),
        _ => None,
    };
    let context = v.field("context").unwrap();
    assert_eq!(cap(context.field("thread").unwrap()), Some(0));
    assert_eq!(cap(context.field("callbackThread").unwrap()), Some(1));
    assert_eq!(v.field("echo").and_then(Value::as_text), Some("x"));

    let make_echo = Call::plan(&set, "Init.makeEcho", &json!({})).unwrap();
    assert_eq!(make_echo.next, Some(0));
    assert_eq!(make_echo.destroy.unwrap().name, "Echo.destroy");
    // construct takes no Context, so none is added (its params have no such field).
    let construct = Call::plan(&set, "Init.construct", &json!({})).unwrap();
    assert!(construct.destroy.is_none());
}

#[test]
fn planning_errors_say_what_there_is() {
    let set = master();
    let err = |step: &str, args| Call::plan(&set, step, &args).unwrap_err();
    assert!(matches!(err("Echo", json!({})), PlanError::BadStep { .. }));
    let e = err("Nope.x", json!({}));
    assert!(matches!(e, PlanError::NoInterface { .. }), "{e}");
    assert!(e.to_string().contains("Echo, Init"), "{e}");
    assert_eq!(
        err("Echo.ech", json!({})).to_string(),
        "step 'Echo.ech': Echo has no method ech (have: destroy, echo)"
    );
    match err("Echo.echo", json!({"eco": "x"})) {
        PlanError::Args { step, source } => {
            assert_eq!(step, "Echo.echo");
            assert!(source.to_string().contains("no field 'eco'"), "{source}");
        }
        other => panic!("{other:?}"),
    }
}

#[cfg(unix)]
mod connecting {
    use std::io::Read;
    use std::time::Duration;

    use crate::ClientError;
    use crate::connect::{self, FdArg};

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mpspy-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_socket_nobody_listens_on_is_refused() {
        let dir = scratch("refused");
        let sock = dir.join("stale.sock");
        // Other tests in this process spawn children: one forked between our bind and drop
        // holds the listener until it execs, and a connect in that moment is accepted. Such a
        // success says nothing about stale sockets, so make a fresh one and ask again.
        let mut tries = 0;
        let refused = loop {
            let _ = std::fs::remove_file(&sock);
            drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
            match connect::unix(&sock) {
                Ok(_) if tries < 20 => tries += 1,
                other => break other,
            }
        };
        match refused {
            Err(ClientError::Connect { path, source }) => {
                assert_eq!(path, sock);
                assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A child that writes its argv to the fd it was given, in both argv shapes.
    #[test]
    fn a_spawned_child_gets_its_end_of_the_socketpair_by_number() {
        // bash, not sh: dash takes only one-digit fds in `>&N`, and the fd is often higher.
        if std::process::Command::new("bash")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("note: no bash to write the child in; skipping");
            return;
        }
        let dir = scratch("spawn");
        let script = dir.join("child");
        std::fs::write(
            &script,
            "#!/usr/bin/env bash\nfor fd; do :; done\nprintf '%s|' \"$@\" >&\"$fd\"\nexit 4\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        for (shape, flag) in [(FdArg::Ipcfd, "-ipcfd|"), (FdArg::Bare, "")] {
            let mut spawned = connect::spawn(script.to_str().unwrap(), shape, &[]).unwrap();
            let mut got = String::new();
            spawned.stream.read_to_string(&mut got).unwrap();
            let fd = got.trim_start_matches(flag).trim_end_matches('|');
            let status = spawned
                .child
                .wait_timeout(Duration::from_secs(10))
                .unwrap()
                .expect("the child exits");
            assert!(
                got.starts_with(flag) && fd.parse::<u32>().is_ok(),
                "{shape:?}: {got} {status:?}"
            );
            assert_eq!(status.code(), Some(4));
        }
        match connect::spawn(dir.join("missing").to_str().unwrap(), FdArg::Ipcfd, &[]) {
            Err(e @ ClientError::Spawn { .. }) => {
                assert!(e.to_string().contains("spawning"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
