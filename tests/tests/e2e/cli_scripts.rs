//! The `connectoid` CLI as scripts and new users meet it: JSON errors on
//! stdout with the same exit code, `poll --json` with nothing new, snake_case
//! keys, whole-millisecond latencies, hints for the usual mistakes (an
//! unquoted string payload, an unknown peer, a relay without `http://`),
//! relays probed before they are added, the payload limit in JSON bytes,
//! completions, the man page and `--version`.

use connectoid_tests::{RelayCommand, RelayProcess};
use serde_json::Value;

use super::cli::{json_lines, ok, run};

/// Runs a command with `--json` that must fail with exit code 1; returns
/// the one JSON object it printed on stdout.
fn json_error(profile: &std::path::Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = run(profile, &args);
    assert_eq!(output.status.code(), Some(1), "connectoid {args:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let error: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["ok"], false, "{error}");
    error
}

#[test]
fn json_errors_empty_polls_and_snake_case_keys() {
    let relay = RelayProcess::start().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());

    let error = json_error(alice, &["send", "Nobody", "{}"]);
    assert!(
        error["error"].as_str().unwrap().contains("no peer named"),
        "{error}"
    );
    let error = json_error(alice, &["link", "decode", "not-a-link"]);
    assert!(error["error"].is_string(), "{error}");

    ok(alice, &["relays", "add", relay.url().as_str()]);
    // Nothing new: one line that says so, not silence.
    assert_eq!(
        json_lines(alice, &["poll", "--once"]),
        vec![serde_json::json!({ "event": "nothing-new" })]
    );

    // The shopping list prints snake_case keys.
    ok(alice, &["list", "add", "milk"]);
    let shown = json_lines(alice, &["list", "show"]).remove(0);
    assert_eq!(shown["read_only"], false, "{shown}");
    assert!(shown.get("readOnly").is_none(), "{shown}");
    let item = &shown["items"][0];
    assert_eq!(item["text"], "milk");
    assert!(item["updated_at"].is_u64(), "{item}");
    assert!(item.get("updatedAt").is_none(), "{item}");

    // Latency in whole milliseconds.
    let probes = json_lines(alice, &["relays", "probe"]).remove(0);
    assert!(probes[0]["latency_ms"].is_u64(), "{probes}");

    // An unknown peer: the known ones are listed. A bare word as payload:
    // quoting is suggested.
    let link = ok(alice, &["share", "Bob"]);
    ok(bob, &["accept", link.trim(), "Alice"]);
    let output = run(bob, &["send", "Alicia", "\"hi\""]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("known peers: Alice"), "{stderr}");
    let output = run(bob, &["send", "Alice", "hello"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(r#"e.g. '"hello"'"#), "{stderr}");

    // Too big: said in bytes of JSON, and that many bytes do go through.
    let big = Value::String("x".repeat(70_000)).to_string();
    let output = run(bob, &["send", "Alice", &big]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    let max: usize = stderr
        .split("may be at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stderr}"));
    let fits = Value::String("x".repeat(max - 2)).to_string();
    assert_eq!(fits.len(), max);
    ok(bob, &["send", "Alice", &fits]);
    let over = Value::String("x".repeat(max - 1)).to_string();
    assert!(!run(bob, &["send", "Alice", &over]).status.success());
}

#[test]
fn relays_add_probes_suggests_and_prints_the_stored_url() {
    let relay = RelayProcess::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path();

    // host:port is not a URL: the error suggests http://.
    for bare in ["127.0.0.1:8081", "localhost:8081"] {
        let output = run(profile, &["relays", "add", bare]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            stderr.contains(&format!("did you mean http://{bare}/")),
            "{stderr}"
        );
    }

    // A relay that does not answer: a warning, or a refusal with --strict.
    let dead = "http://127.0.0.1:9/";
    let output = run(profile, &["relays", "add", dead, "--strict"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("does not answer")
    );
    assert!(
        json_lines(profile, &["relays", "list"])[0]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let output = run(profile, &["relays", "add", dead]);
    assert!(output.status.success());
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .starts_with("warning: http://127.0.0.1:9/ does not answer")
    );

    // A live one, given without the trailing slash: the stored URL is printed.
    let given = relay.url().to_string();
    let given = given.trim_end_matches('/');
    let output = run(profile, &["relays", "add", given, "--strict"]);
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim(), format!("added {}", relay.url()));
}

#[test]
fn completions_man_page_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path();
    let bash = ok(profile, &["completions", "bash"]);
    assert!(
        bash.contains("complete") && bash.contains("relays"),
        "{bash}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        assert!(!ok(profile, &["completions", shell]).is_empty());
    }
    let man = ok(profile, &["man"]);
    assert!(man.contains(".TH connectoid 1"), "{man}");
    let version = ok(profile, &["--version"]);
    assert!(
        version.starts_with(&format!("connectoid {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // Built from a git checkout (as the tests are): the commit is named.
    if std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(version.contains("(commit "), "{version}");
    }
}

/// POSTs `body` to the relay as README.md's curl quickstart does; returns
/// the HTTP status and the JSON answer.
fn post(relay: &str, body: &Value) -> (u16, Value) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(relay)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    })
}

/// README.md's "Quickstart with curl", step by step: a key from a profile,
/// a send, a check, `connectoid answer`, and the receive it unlocks.
#[test]
fn the_curl_quickstart_receives_with_the_answer_the_cli_prints() {
    let relay = RelayProcess::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let me = dir.path();
    let url = relay.url().to_string();
    // LINK=$(me share Me --relay $RELAY); KEY=$(me link decode "$LINK" | awk '/^key:/ {print $2}')
    let link = ok(me, &["share", "Me", "--relay", &url]);
    let decoded = ok(me, &["link", "decode", link.trim()]);
    let key = decoded
        .lines()
        .find_map(|line| line.strip_prefix("key:"))
        .unwrap()
        .trim()
        .to_owned();
    // DATA: 200 random bytes in base64url.
    let mut bytes = [0u8; 200];
    getrandom::fill(&mut bytes).unwrap();
    let data = connectoid::protocol::b64::encode(&bytes);

    let (status, sent) = post(
        &url,
        &serde_json::json!({"pub": key, "ext": null, "action": "send", "data": data}),
    );
    assert_eq!((status, &sent), (200, &serde_json::json!({"ok": true})));
    let (_, checked) = post(
        &url,
        &serde_json::json!({"pub": key, "ext": null, "action": "check", "at": 0}),
    );
    assert_eq!(checked["found"], true, "{checked}");
    let question = checked["question"].as_str().unwrap();

    // A wrong answer: 403 "Wrong answer", as README.md says.
    let (status, refused) = post(
        &url,
        &serde_json::json!({"pub": key, "ext": null, "action": "receive",
            "answer": connectoid::protocol::b64::encode(&[0u8; 32]), "at": 0, "limit": 1}),
    );
    assert_eq!(
        (status, refused["error"].as_str()),
        (403, Some("Wrong answer"))
    );

    // ANSWER=$(me answer Me --relay $RELAY "$QUESTION")
    let answer = ok(me, &["answer", "Me", "--relay", &url, question]);
    let (status, received) = post(
        &url,
        &serde_json::json!({"pub": key, "ext": null, "action": "receive",
            "answer": answer.trim(), "at": 0, "limit": 1}),
    );
    assert_eq!(status, 200, "{received}");
    assert_eq!(received["ok"], true, "{received}");
    assert_eq!(received["data"], data.as_str(), "{received}");
    assert!(received["at"].is_u64(), "{received}");

    // A question about another mailbox is refused, in one sentence.
    let output = run(me, &["answer", "Me", "--relay", &url, "AAAA"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("not about your mailbox"), "{stderr}");
}

/// `-v` says what the client does (which relay, UDP or HTTP, what arrived);
/// logs to a pipe carry no colour codes.
#[test]
fn verbose_logs_say_what_the_client_does_without_colour_codes() {
    let relay = RelayProcess::start().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());
    let url = relay.url().to_string();
    let link = ok(alice, &["share", "Bob", "--relay", &url]);
    let output = run(bob, &["-v", "accept", link.trim(), "Alice"]);
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains(&format!("{url}: sent")), "{stderr}");
    let output = run(alice, &["-v", "poll"]);
    assert!(output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("over UDP"), "{stderr}");
    assert!(
        stderr.contains(&format!("{url}: received 1 message(s) for Bob")),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    // -vv: every request.
    let output = run(alice, &["-vv", "--no-udp", "poll"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("check answered HTTP 200"), "{stderr}");
}

/// `sync` says whom it waits for and, per peer, the path it synced by
/// (directly, with the peer's address) or that it was not reached within
/// `--wait` (whose default `--help` shows); an offer left over from a
/// failed run does not fail the next one (issue 15, item 4).
#[test]
fn sync_says_whom_it_waits_for_and_the_result_per_peer() {
    let relay = RelayProcess::start().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());
    let url = relay.url().to_string();
    let help = ok(alice, &["sync", "--help"]);
    assert!(
        help.contains("--wait <SECONDS>") && help.contains("[default: 30]"),
        "{help}"
    );

    ok(alice, &["list", "add", "milk"]);
    let link = ok(alice, &["list", "share", "Bob", "--relay", &url]);
    ok(bob, &["accept", link.trim(), "Alice"]);

    // Both: each says it synced directly (bounded by --wait).
    let args = ["sync", "--loopback", "--interval", "0.2", "--wait", "60"];
    let bob_dir = bob.to_owned();
    let bob_sync = std::thread::spawn(move || run(&bob_dir, &args));
    let alice_out = run(alice, &args);
    let bob_out = bob_sync.join().unwrap();
    for (output, peer) in [(alice_out, "Bob"), (bob_out, "Alice")] {
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("synced with {peer} directly (127.0.0.1:")),
            "{stdout}"
        );
    }
    let shown = json_lines(bob, &["list", "show"]).remove(0);
    assert_eq!(shown["items"][0]["text"], "milk", "{shown}");

    // Bob alone: Alice is not reached within the wait.
    let args = ["sync", "--loopback", "--interval", "0.2", "--wait", "1"];
    let output = run(bob, &args);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("waiting for Alice (up to 1 s; Ctrl-C to stop)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("not synced with Alice: not reached within 1 s"),
        "{stderr}"
    );

    // Two more lone runs: three offers wait in Alice's mailbox. Answering
    // any of them would cost the next run its direct link (nobody listens
    // there any more); they have expired, so that run of both syncs
    // directly as if they were not there. (Without expiry Alice answers at
    // least one of them three times in four: her own offer beats one in
    // glare only when its random session id is the lower.)
    for _ in 0..2 {
        assert_eq!(run(bob, &args).status.code(), Some(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let args = ["sync", "--loopback", "--interval", "0.2", "--wait", "60"];
    let alice_dir = alice.to_owned();
    let alice_sync = std::thread::spawn(move || json_lines(&alice_dir, &args));
    let bob_lines = json_lines(bob, &args);
    let alice_lines = alice_sync.join().unwrap();
    for (lines, peer) in [(alice_lines, "Bob"), (bob_lines, "Alice")] {
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["synced"], peer, "{line}");
        assert_eq!(line["path"], "direct", "{line}");
        let remote: std::net::SocketAddr = line["remote"].as_str().unwrap().parse().unwrap();
        assert!(remote.ip().is_loopback(), "{line}");
    }
}

/// `sync --relays-only` sends the list through the relays; the peer, which
/// offered a direct link, answers the same way; both say so.
#[test]
fn sync_through_the_relays_only_says_so() {
    let relay = RelayCommand::new().udp().start().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob) = (a.path(), b.path());
    let url = relay.url().to_string();
    ok(alice, &["list", "add", "milk"]);
    let link = ok(alice, &["list", "share", "Bob", "--relay", &url]);
    ok(bob, &["accept", link.trim(), "Alice"]);
    ok(bob, &["list", "add", "eggs"]);
    let bob_dir = bob.to_owned();
    let bob_sync = std::thread::spawn(move || {
        json_lines(
            &bob_dir,
            &["sync", "--loopback", "--interval", "0.2", "--wait", "60"],
        )
    });
    let alice_out = ok(
        alice,
        &["sync", "--relays-only", "--interval", "0.2", "--wait", "60"],
    );
    let bob_lines = bob_sync.join().unwrap();
    assert_eq!(
        alice_out.trim(),
        "synced with Bob through the relays: 1 item(s) changed here"
    );
    assert_eq!(bob_lines.len(), 1, "{bob_lines:?}");
    assert_eq!(
        bob_lines[0],
        serde_json::json!({"synced": "Alice", "changed": 1, "path": "relayed", "remote": null})
    );
}
