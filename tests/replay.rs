//! Shipped recordings stay readable: every sample replays to the same calls (a newer mpspy must
//! still read what an older one wrote).

use crate::common::*;

#[test]
fn shipped_demo_recording_replays() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng");
    let out = run_ok(mpspy().arg("replay").arg(&path).arg("--json"));
    let ev = json_lines(&out.stdout);
    assert_eq!(ev[0]["type"], "session");
    assert_eq!(ev[0]["data"]["schemas"], "auto");
    assert!(of_type(&ev, "undecodable").is_empty());
    let names = call_names(&ev);
    assert_eq!(names.len(), 19);
    assert_eq!(names.first().unwrap(), "Init.construct");
    assert_eq!(names.last().unwrap(), "Rpc.executeRpc");
    assert_eq!(of_type(&ev, "return").len(), 20, "19 calls + the bootstrap");
    assert!(
        of_type(&ev, "return")
            .iter()
            .all(|r| r["data"]["latency_ns"].as_u64().unwrap() > 0)
    );
    assert_eq!(
        returns_of(&ev, "Rpc.executeRpc")[0]["data"]["results"]["result"],
        r#"{"jsonrpc":"2.0","result":5,"id":"1"}"#
    );
    let opened = &of_type(&ev, "conn_opened")[0]["data"];
    assert_eq!(opened["server"]["name"], "mpspy-testpeer");
    assert!(opened["client"]["pid"].is_u64());

    // The text form reads the same file.
    let out = run_ok(mpspy().arg("replay").arg(&path));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Rpc.executeRpc"), "{text}");
}

#[test]
fn torn_and_foreign_recordings() {
    let dir = std::env::temp_dir().join(format!("mpspy-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let whole =
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/demo.pcapng"))
            .unwrap();
    let torn = dir.join("torn.pcapng");
    std::fs::write(&torn, &whole[..whole.len() - 37]).unwrap();
    let out = run_ok(mpspy().arg("replay").arg(&torn).arg("--json"));
    let ev = json_lines(&out.stdout);
    assert!(
        call_names(&ev).len() >= 18,
        "everything before the tear replays"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends inside a block"));

    let foreign = dir.join("foreign.pcapng");
    std::fs::write(&foreign, b"this is not a recording").unwrap();
    let out = mpspy().arg("replay").arg(&foreign).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an mpspy recording"));
    let _ = std::fs::remove_dir_all(dir);
}
