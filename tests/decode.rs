//! `mpspy decode` against real captures of bitcoin-node master, bitcoin-cli, a pycapnp client and
//! the libmultiprocess example.

use serde_json::{Value, json};

use crate::common::*;

const CLI: (&str, &str) = (
    "captures/bitcoin-node-master/cli-getblockcount.c2s.bin",
    "captures/bitcoin-node-master/cli-getblockcount.s2c.bin",
);
const PY: (&str, &str) = (
    "captures/bitcoin-node-master/pyclient.c2s.bin",
    "captures/bitcoin-node-master/pyclient.s2c.bin",
);
const CALC: (&str, &str) = (
    "captures/mpexample/mpcalculator.mpexample-to-child.bin",
    "captures/mpexample/mpcalculator.child-to-mpexample.bin",
);
const PRINTER: (&str, &str) = (
    "captures/mpexample/mpprinter.mpexample-to-child.bin",
    "captures/mpexample/mpprinter.child-to-mpexample.bin",
);

#[test]
fn every_frame_of_every_capture_decodes() {
    for (c2s, s2c) in [CLI, PY, CALC, PRINTER] {
        let events = decode_json(c2s, s2c, &[]);
        assert!(
            of_type(&events, "undecodable").is_empty(),
            "{c2s}: undecodable frames"
        );
        assert!(
            of_type(&events, "schema_mismatch").is_empty(),
            "{c2s}: schema mismatch"
        );
        assert_eq!(message_count(&events, "c2s"), frames_in(c2s), "{c2s}");
        assert_eq!(message_count(&events, "s2c"), frames_in(s2c), "{s2c}");
        for e in of_type(&events, "call")
            .iter()
            .chain(of_type(&events, "return").iter())
        {
            let d = &e["data"];
            assert!(
                !d["interface"].as_str().unwrap().starts_with("0x"),
                "unnamed interface: {e}"
            );
            assert!(
                !d["method"].as_str().unwrap().starts_with('@'),
                "unnamed method: {e}"
            );
        }
        // Every return is paired with its call.
        assert!(
            of_type(&events, "return")
                .iter()
                .all(|r| r["data"]["interface"] != "?")
        );
    }
}

#[test]
fn bitcoin_cli_getblockcount() {
    let ev = decode_json(CLI.0, CLI.1, &[]);
    assert_eq!(
        call_names(&ev),
        [
            "Init.construct",
            "ThreadMap.makeThread",
            "Init.makeRpc",
            "Rpc.executeRpc"
        ]
    );
    let exec = &calls_of(&ev, "Rpc.executeRpc")[0]["data"];
    assert_eq!(
        exec["params"]["request"],
        r#"{"method":"getblockcount","params":[],"id":"1","jsonrpc":"2.0"}"#
    );
    assert_eq!(exec["params"]["uri"], "/");
    assert_eq!(exec["params"]["user"], "");
    assert_eq!(exec["target"], "Rpc#5");
    // The thread lane: the server thread made for bitcoin-cli's main thread.
    assert_eq!(exec["thread"], "bitcoin-cli-4607/bitcoin-cli-4607");
    let ret = &returns_of(&ev, "Rpc.executeRpc")[0]["data"];
    assert_eq!(ret["outcome"], "results");
    assert_eq!(
        ret["results"]["result"],
        r#"{"jsonrpc":"2.0","result":3,"id":"1"}"#
    );
    // makeThread and makeRpc go out in one write; the context names the pending answer.
    let make_rpc = &calls_of(&ev, "Init.makeRpc")[0]["data"];
    assert_eq!(make_rpc["thread"], "bitcoin-cli-4607/bitcoin-cli-4607");
    assert_eq!(
        make_rpc["cap_table"][0],
        json!({"kind": "receiver_answer", "id": {"question": 0, "path": [0]}})
    );
    // bitcoin-cli ends by releasing Rpc; the server drops each callbackThread after a call.
    let releases: Vec<(&str, &str)> = of_type(&ev, "release")
        .iter()
        .map(|e| {
            (
                e["dir"].as_str().unwrap(),
                e["data"]["cap"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        releases,
        [("s2c", "Thread#3"), ("s2c", "Thread#6"), ("c2s", "Rpc#5")]
    );
    let abort = &of_type(&ev, "abort")[0];
    assert_eq!(abort["dir"], "s2c");
    assert_eq!(abort["data"]["exception"]["reason"], "Peer disconnected.");
    assert_eq!(abort["data"]["exception"]["type"], "disconnected");
    let closed = &of_type(&ev, "conn_closed")[0]["data"];
    let live: Vec<&str> = closed["live_caps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cap"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["ThreadMap#0", "Init#1", "ThreadMap#2", "Thread#4"]);
}

#[test]
fn pycapnp_client_echo_mining_blocktemplate() {
    let ev = decode_json(PY.0, PY.1, &[]);
    let names = call_names(&ev);
    assert_eq!(
        &names[..4],
        [
            "Init.construct",
            "ThreadMap.makeThread",
            "Init.makeEcho",
            "Echo.echo"
        ]
    );
    let echoes: Vec<&Value> = calls_of(&ev, "Echo.echo")
        .iter()
        .map(|c| &c["data"]["params"]["echo"])
        .collect();
    assert_eq!(echoes, [&json!("hello"), &json!(""), &json!("ipc-trace")]);
    let echoed: Vec<&Value> = returns_of(&ev, "Echo.echo")
        .iter()
        .map(|r| &r["data"]["results"]["result"])
        .collect();
    assert_eq!(echoed, [&json!("hello"), &json!(""), &json!("ipc-trace")]);
    // pycapnp builds Context with only `thread`, named by makeThread("pyclient").
    let echo = &calls_of(&ev, "Echo.echo")[0]["data"];
    assert_eq!(echo["thread"], "pyclient");
    assert!(echo.get("callback_thread").is_none());
    assert_eq!(echo["params"]["context"]["callbackThread"], Value::Null);

    let tip = &returns_of(&ev, "Mining.getTip")[0]["data"]["results"];
    assert_eq!(tip["hasResult"], true);
    assert_eq!(tip["result"]["height"], 5);
    assert_eq!(tip["result"]["hash"]["len"], 32);
    assert!(
        tip["result"]["hash"]["hex"]
            .as_str()
            .unwrap()
            .starts_with("cb8657d6")
    );
    assert_eq!(
        returns_of(&ev, "Mining.isTestChain")[0]["data"]["results"]["result"],
        true
    );
    assert_eq!(
        returns_of(&ev, "Mining.isInitialBlockDownload")[0]["data"]["results"]["result"],
        false
    );

    // Defaults are XOR-encoded: these values only come out right with master's defaults.
    let cnb = &calls_of(&ev, "Mining.createNewBlock")[0]["data"]["params"];
    assert_eq!(
        cnb["options"],
        json!({"useMempool": true, "blockReservedWeight": 8000, "coinbaseOutputMaxAdditionalSigops": 400})
    );
    assert_eq!(cnb["cooldown"], false);
    let wait = &calls_of(&ev, "BlockTemplate.waitNext")[0]["data"]["params"]["options"];
    assert_eq!(
        wait,
        &json!({"timeout": 200.0, "feeThreshold": 2_100_000_000_000_000i64})
    );
    assert_eq!(
        returns_of(&ev, "BlockTemplate.waitNext")[0]["data"]["results"]["result"],
        Value::Null
    );
    assert_eq!(
        returns_of(&ev, "BlockTemplate.getBlockHeader")[0]["data"]["results"]["result"]["len"],
        80
    );
    assert_eq!(
        returns_of(&ev, "BlockTemplate.getBlock")[0]["data"]["results"]["result"]["len"],
        227
    );
    let cb = &returns_of(&ev, "BlockTemplate.getCoinbaseTx")[0]["data"]["results"]["result"];
    assert_eq!(cb["version"], 2);
    assert_eq!(cb["sequence"], 0xFFFF_FFFEu32);
    assert_eq!(cb["blockRewardRemaining"], 5_000_000_000u64);
    // lockTime = new block height − 1 = 6 − 1.
    assert_eq!(cb["lockTime"], 5);
    assert_eq!(cb["requiredOutputs"][0]["len"], 47);

    let check = &returns_of(&ev, "Mining.checkBlock")[0]["data"];
    assert_eq!(check["outcome"], "exception");
    assert_eq!(check["exception"]["type"], "failed");
    assert_eq!(
        check["exception"]["reason"],
        "std::exception: SpanReader::read(): end of data: iostream error"
    );
    assert_eq!(
        calls_of(&ev, "Mining.checkBlock")[0]["data"]["params"]["block"],
        json!({"len": 10, "hex": "00000000000000000000"})
    );

    // Server exports 0..5 in order, as the digest's walkthrough has them.
    let created: Vec<&str> = of_type(&ev, "cap_created")
        .iter()
        .map(|e| e["data"]["cap"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            "Init#0",
            "ThreadMap#1",
            "Thread#2",
            "Echo#3",
            "Mining#4",
            "BlockTemplate#5"
        ]
    );
    // destroy() was called on Echo and BlockTemplate, but pycapnp never released them.
    let closed = &of_type(&ev, "conn_closed")[0]["data"];
    let destroyed: Vec<&str> = closed["live_caps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["destroyed"] == true)
        .map(|c| c["cap"].as_str().unwrap())
        .collect();
    assert_eq!(destroyed, ["Echo#3", "BlockTemplate#5"]);
}

#[test]
fn mpexample_calculator_callbacks_and_printer() {
    let ev = decode_json(CALC.0, CALC.1, &[]);
    assert_eq!(
        of_type(&ev, "schema_chosen")[0]["data"]["schemas"],
        "mpexample"
    );
    let eqns: Vec<&Value> = calls_of(&ev, "CalculatorInterface.solveEquation")
        .iter()
        .map(|c| &c["data"]["params"]["eqn"])
        .collect();
    assert_eq!(eqns, [&json!("1+1"), &json!("hello world")]);
    // The calculator calls back into the parent's Printer, on the parent's waiting thread.
    let prints = calls_of(&ev, "PrinterInterface.print");
    assert_eq!(prints.len(), 2);
    assert_eq!(prints[0]["dir"], "s2c");
    assert_eq!(
        prints[0]["data"]["params"]["text"],
        "Wow 1+1, that's a tough one.\n"
    );
    assert_eq!(prints[0]["data"]["target"], "PrinterInterface#4");
    // Causal order: each callback comes after the solveEquation that caused it, and its
    // Context.thread is that call's callbackThread.
    let solve = calls_of(&ev, "CalculatorInterface.solveEquation");
    assert!(solve[0]["seq"].as_u64() < prints[0]["seq"].as_u64());
    assert_eq!(
        prints[0]["data"]["thread"],
        solve[0]["data"]["callback_thread"]
    );
    let makecalc = &calls_of(&ev, "InitInterface.makeCalculator")[0]["data"];
    assert_eq!(makecalc["params"]["print"]["cap"], "PrinterInterface#4");
    assert_eq!(makecalc["params"]["print"]["interface"], "PrinterInterface");
    // Destroy runs a nested Printer.destroy callback before the Calculator's destroy returns.
    let pd = calls_of(&ev, "PrinterInterface.destroy")[0]["seq"]
        .as_u64()
        .unwrap();
    let cd_call = calls_of(&ev, "CalculatorInterface.destroy")[0]["seq"]
        .as_u64()
        .unwrap();
    let cd_ret = returns_of(&ev, "CalculatorInterface.destroy")[0]["seq"]
        .as_u64()
        .unwrap();
    assert!(cd_call < pd && pd < cd_ret);

    let ev = decode_json(PRINTER.0, PRINTER.1, &[]);
    let texts: Vec<&Value> = calls_of(&ev, "PrinterInterface.print")
        .iter()
        .map(|c| &c["data"]["params"]["text"])
        .collect();
    assert_eq!(
        texts,
        [
            &json!("Wow 1+1, that's a tough one.\n"),
            &json!("Wow hello world, that's a tough one.\n")
        ]
    );
    assert_eq!(
        call_names(&ev)[..3],
        [
            "InitInterface.construct",
            "ThreadMap.makeThread",
            "InitInterface.makePrinter"
        ]
    );
}

#[test]
fn wrong_schema_set_is_reported_with_the_likely_one() {
    let ev = decode_json(PY.0, PY.1, &["--schemas", "v30"]);
    let mm = of_type(&ev, "schema_mismatch");
    assert!(!mm.is_empty());
    let first = &mm[0]["data"];
    assert_eq!(first["schemas"], "v30");
    assert_eq!(first["interface"], "Init");
    assert_eq!(first["method_id"], 3);
    assert_eq!(first["likely"], json!(["master", "v31"]));
    // v31 and master share Mining.createNewBlock's layout; v30 sends 0w/1p.
    assert!(
        mm.iter()
            .any(|m| m["data"]["interface"] == "Mining" && m["data"]["method_id"] == 4)
    );
}

#[test]
fn text_output_is_one_line_per_event() {
    let out = run_ok(
        mpspy()
            .arg("decode")
            .arg(fixture(CLI.0))
            .arg(fixture(CLI.1)),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(r#"call q0 Rpc.executeRpc on Rpc#5 [thread bitcoin-cli-4607/bitcoin-cli-4607, callback Thread#6]"#), "{text}");
    assert!(text.contains(r#"return q0 Rpc.executeRpc (result = "{\"jsonrpc\":\"2.0\",\"result\":3,\"id\":\"1\"}")"#), "{text}");
    assert!(text.contains("abort disconnected: Peer disconnected."));
}

#[test]
fn garbage_after_valid_frames_is_undecodable_not_fatal() {
    let dir = std::env::temp_dir().join(format!("mpspy-garbage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c2s = std::fs::read(fixture(CLI.0)).unwrap();
    let good = c2s.len();
    c2s.extend_from_slice(&[0xff; 24]);
    std::fs::write(dir.join("a"), &c2s).unwrap();
    // A frame that parses but whose root pointer leads nowhere.
    let mut s2c = std::fs::read(fixture(CLI.1)).unwrap();
    s2c.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
    s2c.extend_from_slice(&0x0000_0001_0000_0fc0u64.to_le_bytes());
    std::fs::write(dir.join("b"), &s2c).unwrap();
    let out = run_ok(
        mpspy()
            .arg("decode")
            .arg(dir.join("a"))
            .arg(dir.join("b"))
            .arg("--json"),
    );
    let ev = json_lines(&out.stdout);
    let bad = of_type(&ev, "undecodable");
    assert_eq!(bad.len(), 2, "{bad:?}");
    let framing = bad.iter().find(|b| b["dir"] == "c2s").unwrap();
    assert_eq!(framing["data"]["offset"], good);
    assert_eq!(framing["data"]["stopped"], true);
    assert!(
        framing["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("segments")
    );
    assert!(
        framing["data"]["hex"]
            .as_str()
            .unwrap()
            .starts_with("ffffffff")
    );
    let pointer = bad.iter().find(|b| b["dir"] == "s2c").unwrap();
    assert_eq!(pointer["data"]["stopped"], false);
    assert!(
        pointer["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("outside its segment")
    );
    // Everything before the bad bytes still decoded.
    assert_eq!(calls_of(&ev, "Rpc.executeRpc").len(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_flags_and_files_name_what_is_wrong() {
    let out = mpspy()
        .args(["decode", "x", "y", "--schemas", "v29"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--schemas") && err.contains("v29") && err.contains("master"),
        "{err}"
    );

    let out = mpspy()
        .args(["decode", "/nonexistent/a", "/nonexistent/b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/a"));

    let out = mpspy()
        .arg("decode")
        .arg(fixture(CLI.0))
        .arg(fixture(CLI.1))
        .args(["--schema", "/nonexistent/x.capnp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--schema /nonexistent/x.capnp"));

    // A file that is neither .capnp nor a compiled request.
    let out = mpspy()
        .arg("decode")
        .arg(fixture(CLI.0))
        .arg(fixture(CLI.1))
        .arg("--schema")
        .arg(fixture(CLI.0))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a compiled schema"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// mpexample's calculator prints through a callback into mpexample while `solveEquation` runs
/// (and destroys its printer while `destroy` runs): the engine names each callback's cause.
#[test]
fn callbacks_name_the_call_that_caused_them() {
    let events = decode_json(
        "captures/mpexample/mpcalculator.mpexample-to-child.bin",
        "captures/mpexample/mpcalculator.child-to-mpexample.bin",
        &[],
    );
    let by_seq: std::collections::HashMap<u64, &serde_json::Value> = of_type(&events, "call")
        .into_iter()
        .map(|c| (c["seq"].as_u64().unwrap(), c))
        .collect();
    let mut causes = Vec::new();
    for c in of_type(&events, "call") {
        match (c["dir"].as_str(), c["data"]["parent_seq"].as_u64()) {
            (Some("s2c"), Some(p)) => {
                let parent = by_seq[&p];
                assert_eq!(parent["dir"], "c2s");
                assert_eq!(parent["data"]["callback_thread"], c["data"]["thread"]);
                causes.push(format!("{} <- {}", method_of(c), method_of(parent)));
            }
            (Some("s2c"), None) => panic!("a callback without its cause: {c}"),
            (_, p) => assert_eq!(p, None, "a call that is no callback: {c}"),
        }
    }
    assert_eq!(
        causes,
        [
            "PrinterInterface.print <- CalculatorInterface.solveEquation",
            "PrinterInterface.print <- CalculatorInterface.solveEquation",
            "PrinterInterface.destroy <- CalculatorInterface.destroy",
        ]
    );
}
