//! One function per subcommand: call the library, print the result. Results
//! go to stdout (human text, or JSON with `--json`); status and progress go
//! to stderr. Nothing here decides protocol behaviour.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use connectoid::protocol::{Link, RelayEntry, RelayUrl};
use connectoid::{
    AcceptOptions, Client, Delivery, Event, Kind, PeerInfo, PollOptions, RelayProbe, SendReport,
    ShareOptions,
};
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::cli::{Cli, Command, LinkCommand, ListCommand, RelayCommand, RelaysCommand, SendKind};
use connectoid::list;

/// Runs the parsed command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json = cli.json;
    // Commands that need no profile.
    match &cli.command {
        Command::Link {
            command: LinkCommand::Decode { link },
        } => return link_decode(link, json),
        Command::Relay {
            command: RelayCommand::Info { url },
        } => return relay_info(&cli, url, json).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "connectoid", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let client = open(&cli)?;
    let root_certs = cli.root_certs.clone();
    match cli.command {
        Command::Share {
            nickname,
            relays,
            ext,
            pick,
            app_url,
            qr,
            strict,
        } => {
            let mut options = ShareOptions::default();
            options.relays = parse_relays(&relays)?;
            if pick.is_none() {
                // `--pick` probes the relays itself.
                let named = if options.relays.is_empty() {
                    client.relays().await
                } else {
                    options.relays.clone()
                };
                check_relays(&client, &named, ext.is_some(), strict).await?;
            }
            options.pick = pick;
            options.ext = ext;
            let link = client.share(&nickname, options).await?;
            let text = match app_url {
                Some(app) => {
                    let app = parse_app_url(&app)?;
                    link.to_app_url(&app).to_string()
                }
                None => link.encode(),
            };
            if json {
                print_json(&json!({ "nickname": nickname, "link": text }));
            } else {
                println!("{text}");
            }
            if qr {
                eprintln!("{}", qr_code(&text)?);
            }
            eprintln!(
                "shared a link for {nickname} through {} relay(s); send it over a channel you trust",
                link.relays.len()
            );
        }
        Command::Accept {
            link,
            nickname,
            payload,
            relays,
        } => {
            let link = Link::decode(&link).context("link")?;
            let payload = parse_json(&payload)?;
            let mut options = AcceptOptions::default();
            if !relays.is_empty() {
                options.relays = Some(parse_relays(&relays)?);
            }
            let report = client.accept(&link, &nickname, payload, options).await?;
            print_send(&report, &nickname, json);
        }
        Command::Poll {
            once: _,
            watch,
            interval,
        } => return poll(&client, watch, interval, json).await,
        Command::Send {
            nickname,
            payload,
            kind,
        } => {
            let kind = match kind {
                SendKind::Offer => Kind::Offer,
                SendKind::Answer => Kind::Answer,
                SendKind::App => Kind::App,
            };
            let report = match client.send(&nickname, kind, parse_json(&payload)?).await {
                Err(connectoid::ClientError::UnknownPeer(name)) => {
                    bail!("{}", unknown_peer(&client, &name).await)
                }
                other => other?,
            };
            print_send(&report, &nickname, json);
        }
        Command::Peers => {
            let peers = client.peers().await;
            if json {
                print_json(&Value::Array(peers.iter().map(peer_json).collect()));
            } else if peers.is_empty() {
                eprintln!("no peers");
            } else {
                for peer in &peers {
                    print_peer(peer);
                }
            }
        }
        Command::Unshare { nickname } => {
            let report = client.unshare(&nickname).await?;
            let deleted = report.deleted.iter().filter(|o| o.result.is_ok()).count();
            for outcome in &report.deleted {
                if let Err(e) = &outcome.result {
                    eprintln!("{}: mailbox not deleted: {e}", outcome.relay);
                }
            }
            if json {
                print_json(&json!({
                    "nickname": nickname,
                    "notified": report.notified.as_ref().map(send_json),
                    "deleted": report.deleted.iter().map(|o| outcome_json(&o.relay, &o.result)).collect::<Vec<_>>(),
                }));
            } else {
                println!(
                    "unshared {nickname}: keys deleted, mailbox deleted at {deleted} of {} relay(s){}",
                    report.deleted.len(),
                    match &report.notified {
                        Some(r) => format!(", notice accepted by {} relay(s)", r.accepted().len()),
                        None => String::new(),
                    }
                );
            }
        }
        Command::Answer {
            nickname,
            relay,
            question,
        } => {
            let relay = parse_relay(&relay)?;
            let answer = match client.answer(&nickname, &relay, &question).await {
                Err(connectoid::ClientError::UnknownPeer(name)) => {
                    bail!("{}", unknown_peer(&client, &name).await)
                }
                other => other?,
            };
            if json {
                print_json(
                    &json!({ "nickname": nickname, "relay": relay.to_string(), "answer": answer }),
                );
            } else {
                println!("{answer}");
            }
        }
        Command::SafetyCode { nickname } => {
            let code = client.safety_code(&nickname).await?;
            if json {
                print_json(
                    &json!({ "nickname": nickname, "emoji": code.emoji(), "words": code.words() }),
                );
            } else {
                println!("{}", code.emoji());
                println!("{}", code.words());
            }
        }
        Command::SetRelays { nickname, relays } => {
            let relays = parse_relays(&relays)?;
            match client.set_relays(&nickname, relays).await? {
                Some(report) => print_send(&report, &nickname, json),
                None if json => print_json(&json!({ "nickname": nickname, "notified": false })),
                None => println!("moved the mailbox for {nickname}; no peer to tell yet"),
            }
        }
        Command::Relays { command } => match command {
            RelaysCommand::Add { url, ext, strict } => {
                let mut entry = RelayEntry::new(parse_relay(&url)?);
                entry.ext = ext;
                check_relays(&client, std::slice::from_ref(&entry), false, strict).await?;
                let kept = keep_root_certificates(&root_certs, client.profile_dir())?;
                let url = entry.url.to_string();
                if client.add_relay(entry).await? {
                    eprintln!("added {url}");
                } else {
                    eprintln!("{url} is already in the list");
                }
                for path in kept {
                    eprintln!(
                        "kept the root certificate {} in the profile",
                        path.display()
                    );
                }
                if json {
                    print_relays(&client.relays().await, json);
                }
            }
            RelaysCommand::Remove { url } => {
                let url = parse_relay(&url)?;
                if !client.remove_relay(&url).await? {
                    bail!("{url} is not in the relay list");
                }
                eprintln!("removed {url}");
                if json {
                    print_relays(&client.relays().await, json);
                }
            }
            RelaysCommand::List => print_relays(&client.relays().await, json),
            RelaysCommand::Probe => {
                let probes = client.probe_relays().await;
                if probes.is_empty() {
                    bail!("the relay list is empty; add one with `connectoid relays add URL`");
                }
                if json {
                    print_json(&Value::Array(probes.iter().map(probe_json).collect()));
                } else {
                    for probe in &probes {
                        print_probe(probe);
                    }
                }
            }
        },
        Command::List { command } => list_command(&client, command, json).await?,
        Command::Sync {
            watch,
            interval,
            wait,
            loopback,
            relays_only,
        } => sync(&client, watch, interval, wait, loopback, relays_only, json).await?,
        Command::Link { .. }
        | Command::Relay { .. }
        | Command::Completions { .. }
        | Command::Man => unreachable_command()?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn list_command(client: &Client, command: ListCommand, json: bool) -> anyhow::Result<()> {
    let dir = client.profile_dir().to_owned();
    let shopping = match command {
        ListCommand::Add { item } => {
            update_list(dir, move |shopping| {
                shopping.add(&item, list::new_id(), list::now())?;
                Ok(())
            })
            .await?
        }
        ListCommand::Remove { item } => {
            update_list(dir, move |shopping| {
                shopping.remove(&item, list::now())?;
                Ok(())
            })
            .await?
        }
        ListCommand::Show => list::load(&dir)?,
        ListCommand::Share {
            nickname,
            read_only,
            relays,
        } => {
            let link = client
                .share(&nickname, ShareOptions::with_relays(parse_relays(&relays)?))
                .await?;
            let access = if read_only {
                list::Access::ReadOnly
            } else {
                list::Access::ReadWrite
            };
            let shared = nickname.clone();
            update_list(dir, move |shopping| {
                shopping.shared_with.insert(shared, access);
                Ok(())
            })
            .await?;
            if json {
                print_json(
                    &json!({ "link": link.encode(), "nickname": nickname, "access": access }),
                );
            } else {
                println!("{}", link.encode());
                eprintln!("send this link to {nickname}; then run `connectoid sync`");
            }
            return Ok(());
        }
    };
    let items = shopping.visible();
    if json {
        // The CLI's own snake_case keys; the list's file and sync format
        // between peers keep theirs.
        let items: Vec<Value> = items
            .iter()
            .map(|item| {
                json!({ "id": item.id, "text": item.text, "updated_at": item.updated_at, "by": item.by })
            })
            .collect();
        print_json(&json!({ "items": items, "read_only": shopping.is_read_only() }));
    } else {
        for item in items {
            println!("- {}", item.text);
        }
    }
    Ok(())
}

/// Changes the list under its lock (another process may be syncing it), off
/// the runtime's threads; returns the list as written.
async fn update_list(
    dir: std::path::PathBuf,
    change: impl FnOnce(&mut list::ShoppingList) -> Result<(), list::ListError> + Send + 'static,
) -> anyhow::Result<list::ShoppingList> {
    let written = tokio::task::spawn_blocking(move || {
        list::update(&dir, |shopping| {
            change(shopping)?;
            Ok(shopping.clone())
        })
    })
    .await??;
    Ok(written)
}

async fn sync(
    client: &Client,
    watch: bool,
    interval: f64,
    wait: f64,
    loopback: bool,
    relays_only: bool,
    json: bool,
) -> anyhow::Result<()> {
    if !interval.is_finite() || interval <= 0.0 {
        bail!("--interval must be a positive number of seconds");
    }
    if !wait.is_finite() || wait <= 0.0 {
        bail!("--wait must be a positive number of seconds");
    }
    let mut options = list::SyncOptions::default();
    if loopback {
        options.link = connectoid::PeerLinkOptions::loopback();
    }
    options.interval = Duration::from_secs_f64(interval);
    options.direct = !relays_only;
    // An offer waits as long as this run does; a later run ignores it.
    options.link.offer_lifetime =
        Duration::from_secs_f64(if watch { wait.max(interval) } else { wait });
    // Each poll waits one interval: the polls that fit in the wait.
    let polls = ((wait / interval).ceil() as usize).max(1);
    options.polls = if watch { 1 } else { polls };
    let peers: Vec<String> = client
        .peers()
        .await
        .into_iter()
        .map(|p| p.nickname)
        .collect();
    if peers.is_empty() {
        bail!("no peers to sync with: share the list with `connectoid list share NICKNAME` first");
    }
    if watch {
        eprintln!(
            "syncing with {} as changes come; Ctrl-C to stop",
            peers.join(", ")
        );
    } else {
        eprintln!(
            "waiting for {} (up to {wait} s; Ctrl-C to stop)...",
            peers.join(", ")
        );
    }
    let mut syncer = list::Syncer::new(client.clone(), options.clone());
    let mut last = None;
    loop {
        let items = list::load(client.profile_dir())?.items;
        // In watch mode, offer only after local changes (or the first time);
        // otherwise just answer. Offers stay pending from round to round.
        let mut report = syncer
            .round(!watch || last.as_ref() != Some(&items))
            .await?;
        for synced in &report.synced {
            let (nickname, changed) = (&synced.nickname, synced.changed);
            let remote = match synced.path {
                list::SyncPath::Direct(remote) => Some(remote),
                _ => None,
            };
            if json {
                print_json(&json!({
                    "synced": nickname,
                    "changed": changed,
                    "path": if remote.is_some() { "direct" } else { "relayed" },
                    "remote": remote.map(|r| r.to_string()),
                }));
            } else if let Some(remote) = remote {
                println!(
                    "synced with {nickname} directly ({remote}): {changed} item(s) changed here"
                );
            } else {
                println!(
                    "synced with {nickname} through the relays: {changed} item(s) changed here"
                );
            }
        }
        for (nickname, error) in &report.failed {
            if json {
                print_json(&json!({ "not_synced": nickname, "error": error }));
            }
            eprintln!("not synced with {nickname}: {error}");
        }
        if !watch {
            for nickname in &peers {
                let done = report.synced_with(nickname).is_some()
                    || report.failed.iter().any(|(n, _)| n == nickname);
                if !done {
                    if json {
                        print_json(&json!({ "not_synced": nickname, "error": "not reached" }));
                    }
                    eprintln!(
                        "not synced with {nickname}: not reached within {wait} s (is the other side running `connectoid sync`?)"
                    );
                }
            }
            if report.synced.is_empty() {
                bail!("no peer synced (is the other side running `connectoid sync`?)");
            }
            return Ok(());
        }
        // What the peer has: after a sync, the merge it made; otherwise
        // what this round started from, so a change made during the round
        // is offered in the next one.
        last = Some(report.peer_items.take().unwrap_or(items));
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(options.interval) => {}
        }
    }
}

fn unreachable_command() -> anyhow::Result<()> {
    Err(anyhow!("internal error: command handled twice"))
}

fn timeout(cli: &Cli) -> anyhow::Result<Duration> {
    if !cli.timeout.is_finite() || cli.timeout <= 0.0 {
        bail!("--timeout must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(cli.timeout))
}

/// The directory in the profile where `relays add --root-cert` keeps root
/// certificates, one PEM file each; every command trusts them.
const ROOTS_DIR: &str = "root-certificates";

/// The root certificates given with `--root-cert` (or
/// `CONNECTOID_ROOT_CERT`), then those kept in the profile (when `profile`
/// is given).
fn root_certificates(cli: &Cli, profile: Option<&Path>) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut paths = cli.root_certs.clone();
    if let Some(dir) = profile.map(|p| p.join(ROOTS_DIR))
        && dir.is_dir()
    {
        let mut kept: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem"))
            .collect();
        kept.sort();
        paths.extend(kept);
    }
    paths
        .iter()
        .map(|path| std::fs::read(path).with_context(|| format!("{}", path.display())))
        .collect()
}

/// Copies the `--root-cert` files into the profile (named by a hash of
/// their content, so adding one twice keeps one copy); returns the copies.
fn keep_root_certificates(root_certs: &[PathBuf], profile: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use sha2::Digest as _;
    let dir = profile.join(ROOTS_DIR);
    let mut kept = Vec::new();
    for path in root_certs {
        let pem = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let digest = sha2::Sha256::digest(&pem);
        let name = format!("{}.pem", connectoid::protocol::b64::encode(&digest[..12]));
        let copy = dir.join(name);
        std::fs::write(&copy, &pem).with_context(|| format!("{}", copy.display()))?;
        kept.push(copy);
    }
    Ok(kept)
}

/// Asks each relay for its information document; warns (or, when
/// `strict`, fails) for each that does not answer, or requires an API key
/// while neither its entry nor the link (`link_ext`) carries one.
async fn check_relays(
    client: &Client,
    relays: &[RelayEntry],
    link_ext: bool,
    strict: bool,
) -> anyhow::Result<()> {
    let probes =
        futures::future::join_all(relays.iter().map(|entry| client.probe(&entry.url))).await;
    let mut problems = Vec::new();
    for (entry, probe) in relays.iter().zip(&probes) {
        match (&probe.info, &probe.error) {
            (_, Some(error)) => problems.push(format!("{} does not answer: {error}", entry.url)),
            (Some(info), None) if info.api_key_required && entry.ext.is_none() && !link_ext => {
                problems.push(format!(
                    "{} requires an API key: pass it with --ext",
                    entry.url
                ));
            }
            _ => {}
        }
    }
    if strict && !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    for problem in problems {
        eprintln!("warning: {problem}");
    }
    Ok(())
}

/// "no peer named ..." with the names the profile knows.
async fn unknown_peer(client: &Client, name: &str) -> String {
    let known: Vec<String> = client
        .peers()
        .await
        .into_iter()
        .map(|p| p.nickname)
        .collect();
    if known.is_empty() {
        format!("no peer named {name:?}; there are no peers yet (share or accept a link first)")
    } else {
        format!("no peer named {name:?}; known peers: {}", known.join(", "))
    }
}

/// Opens the client on the profile (`--profile`, else the user's data directory).
fn open(cli: &Cli) -> anyhow::Result<Client> {
    let dir = match &cli.profile {
        Some(dir) => dir.clone(),
        None => dirs::data_dir()
            .ok_or_else(|| anyhow!("no data directory for this user; pass --profile DIR"))?
            .join("connectoid"),
    };
    let mut builder = Client::builder(&dir)
        .relay_timeout(timeout(cli)?)
        .udp(!cli.no_udp);
    for pem in root_certificates(cli, Some(&dir))? {
        builder = builder.add_root_certificates_pem(&pem);
    }
    Ok(builder.build()?)
}

async fn poll(client: &Client, watch: bool, interval: f64, json: bool) -> anyhow::Result<ExitCode> {
    let mut link_used = false;
    if !watch {
        let poll = client.poll_once().await?;
        print_poll_problems(&poll.report);
        for delivery in &poll.deliveries {
            link_used |= print_delivery(delivery, json);
            client.ack(delivery).await?;
        }
        if poll.report.all_failed() {
            bail!("every relay failed");
        }
        if poll.deliveries.is_empty() {
            if json {
                print_json(&json!({ "event": "nothing-new" }));
            }
            eprintln!("nothing new");
        }
    } else {
        if !interval.is_finite() || interval <= 0.0 {
            bail!("--interval must be a positive number of seconds");
        }
        let mut events = client.events(PollOptions::every(Duration::from_secs_f64(interval)));
        loop {
            // Ctrl-C stops between events, never between printing one and
            // acknowledging it.
            let item = tokio::select! {
                item = events.next() => item,
                _ = tokio::signal::ctrl_c() => None,
            };
            let Some(item) = item else { break };
            match item {
                Ok(delivery) => {
                    print_delivery(&delivery, json);
                    client.ack(&delivery).await?;
                }
                Err(e) => eprintln!("connectoid: {e}"),
            }
        }
    }
    Ok(if link_used {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints what went wrong at each relay: its own errors, the mailboxes it
/// refused and the messages rejected.
fn print_poll_problems(report: &connectoid::PollReport) {
    for relay in &report.relays {
        for error in &relay.errors {
            eprintln!("{}: {error}", relay.relay);
        }
        for refusal in &relay.refused {
            eprintln!(
                "{}: mailbox for {} refused: {}",
                relay.relay, refusal.nickname, refusal.error
            );
        }
        for rejected in &relay.rejected {
            eprintln!("{}: rejected a message: {}", relay.relay, rejected.reason);
        }
    }
}

/// Prints one event; returns whether it was the "link already used" error.
fn print_delivery(delivery: &Delivery, json: bool) -> bool {
    let event = &delivery.event;
    if let Event::LinkAlreadyUsed { nickname } = event {
        // An error: said once, on stderr (and as a JSON line with --json).
        eprintln!("connectoid: {nickname}: {}", connectoid::LINK_ALREADY_USED);
        if !json {
            return true;
        }
    }
    if json {
        let mut line = event_json(event);
        if let Value::Object(map) = &mut line {
            map.insert("id".into(), delivery.id().into());
        }
        print_json(&line);
    } else {
        println!("{}", event_text(event));
    }
    matches!(event, Event::LinkAlreadyUsed { .. })
}

fn event_json(event: &Event) -> Value {
    match event {
        Event::PeerConnected {
            nickname,
            key,
            safety_code,
            body,
        } => json!({
            "event": "peer-connected", "nickname": nickname, "key": key.to_string(),
            "safety_code": safety_code.words(), "body": body,
        }),
        Event::Message {
            nickname,
            kind,
            body,
        } => {
            json!({ "event": "message", "nickname": nickname, "kind": kind.as_str(), "body": body })
        }
        Event::RelaysChanged { nickname, relays } => json!({
            "event": "relays-changed", "nickname": nickname,
            "relays": relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        Event::PeerUnshared { nickname } => {
            json!({ "event": "peer-unshared", "nickname": nickname })
        }
        Event::LinkAlreadyUsed { nickname } => json!({
            "event": "link-already-used", "nickname": nickname, "error": connectoid::LINK_ALREADY_USED,
        }),
        Event::LinkReuseRefused {
            nickname,
            connected,
            refused,
        } => json!({
            "event": "link-reuse-refused", "nickname": nickname,
            "connected": connected.to_string(), "refused": refused.to_string(),
        }),
        _ => json!({ "event": "other", "nickname": event.nickname() }),
    }
}

fn event_text(event: &Event) -> String {
    match event {
        Event::PeerConnected {
            nickname,
            key,
            safety_code,
            body,
        } => {
            let said = if body.is_null() {
                String::new()
            } else {
                format!(" and sent: {body}")
            };
            format!(
                "{nickname} connected (key {key}, safety code {}){said}",
                safety_code.words()
            )
        }
        Event::Message {
            nickname,
            kind,
            body,
        } => format!("{nickname} sent {}: {body}", kind.as_str()),
        Event::RelaysChanged { nickname, relays } => format!(
            "{nickname} moved to relays {}",
            relays
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Event::PeerUnshared { nickname } => {
            format!("{nickname} unshared; their keys and yours are deleted")
        }
        Event::LinkAlreadyUsed { nickname } => {
            format!("{nickname}: {}", connectoid::LINK_ALREADY_USED)
        }
        Event::LinkReuseRefused {
            nickname,
            connected,
            refused,
        } => format!(
            "someone else ({refused}) tried the link for {nickname} after {connected} had used it; they were told"
        ),
        _ => format!("{}: an event this tool does not know", event.nickname()),
    }
}

fn link_decode(text: &str, json: bool) -> anyhow::Result<ExitCode> {
    let link = Link::decode(text)?;
    if json {
        print_json(&json!({
            "key": link.key.to_string(),
            "relays": link.relays.iter().map(|e| json!({ "url": e.url.to_string(), "ext": e.ext })).collect::<Vec<_>>(),
            "ext": link.ext,
            "one_time": link.secret.is_some(),
        }));
    } else {
        println!("key:      {}", link.key);
        for entry in &link.relays {
            match &entry.ext {
                Some(ext) => println!("relay:    {} (ext {ext:?})", entry.url),
                None => println!("relay:    {}", entry.url),
            }
        }
        if let Some(ext) = &link.ext {
            println!("ext:      {ext:?}");
        }
        println!(
            "one-time: {}",
            if link.secret.is_some() {
                "yes (carries a link secret)"
            } else {
                "no (seed form, no link secret)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn relay_info(cli: &Cli, url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let relay = parse_relay(url)?;
    let probe = connectoid::probe_relay(
        &relay,
        timeout(cli)?,
        &root_certificates(cli, cli.profile.as_deref())?,
    )
    .await?;
    let result = probe
        .error
        .clone()
        .map_or(Ok(()), |e| Err(anyhow!("{relay}: {e}")));
    if json {
        print_json(&probe_json(&probe));
    } else {
        print_probe(&probe);
    }
    result.map(|()| ExitCode::SUCCESS)
}

fn parse_relay(text: &str) -> anyhow::Result<RelayUrl> {
    RelayUrl::parse(text).map_err(|e| {
        // `127.0.0.1:8081` or `localhost:8081` parse as a URL with scheme
        // "127.0.0.1" or "localhost": say what was meant.
        if !text.contains("://") {
            anyhow!("relay {text}: {e} (did you mean http://{text}/ ?)")
        } else {
            anyhow!("relay {text}: {e}")
        }
    })
}

fn parse_relays(texts: &[String]) -> anyhow::Result<Vec<RelayEntry>> {
    texts
        .iter()
        .map(|t| parse_relay(t).map(RelayEntry::new))
        .collect()
}

fn parse_app_url(text: &str) -> anyhow::Result<url::Url> {
    url::Url::parse(text).map_err(|e| anyhow!("app URL {text}: {e}"))
}

fn parse_json(text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "the payload is not JSON ({e}); quote a string as JSON, e.g. '{}'",
            serde_json::Value::from(text)
        )
    })
}

fn qr_code(text: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| anyhow!("QR code: {e}"))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

fn print_json(value: &Value) {
    println!("{value}");
}

/// Reports a failed command: one line on stderr and, with `--json`, one
/// `{"ok":false,"error":...}` object on stdout; exit code 1.
pub(crate) fn fail(error: &anyhow::Error, json: bool) -> ExitCode {
    // One line: the error and its causes, joined by ": ".
    let text = format!("{error:#}");
    if json {
        print_json(&json!({ "ok": false, "error": text }));
    }
    eprintln!("connectoid: {text}");
    ExitCode::FAILURE
}

fn outcome_json(
    relay: &RelayUrl,
    result: &Result<(), connectoid::RelayError>,
) -> serde_json::Value {
    match result {
        Ok(()) => json!({ "relay": relay.to_string(), "ok": true }),
        Err(e) => json!({ "relay": relay.to_string(), "ok": false, "error": e.to_string() }),
    }
}

fn send_json(report: &SendReport) -> Value {
    Value::Array(
        report
            .relays
            .iter()
            .map(|o| outcome_json(&o.relay, &o.result))
            .collect(),
    )
}

fn print_send(report: &SendReport, nickname: &str, json: bool) {
    for outcome in &report.relays {
        if let Err(e) = &outcome.result {
            eprintln!("{}: {e}", outcome.relay);
        }
    }
    if json {
        print_json(&json!({ "nickname": nickname, "relays": send_json(report) }));
    } else {
        println!(
            "sent to {nickname}: accepted by {} of {} relay(s)",
            report.accepted().len(),
            report.relays.len()
        );
    }
}

fn peer_json(peer: &PeerInfo) -> Value {
    json!({
        "nickname": peer.nickname,
        "status": peer.status.as_str(),
        "shared_by_us": peer.shared_by_us,
        "our_key": peer.our_key.to_string(),
        "their_key": peer.their_key.map(|k| k.to_string()),
        "our_relays": peer.our_relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "their_relays": peer.their_relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "safety_code": peer.safety_code.map(|c| c.words()),
        "link": peer.link,
    })
}

fn print_peer(peer: &PeerInfo) {
    println!("{} [{}]", peer.nickname, peer.status.as_str());
    println!("  our key:    {}", peer.our_key);
    if let Some(key) = peer.their_key {
        println!("  their key:  {key}");
    }
    let relays = |urls: &[RelayUrl]| {
        urls.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("  our relays: {}", relays(&peer.our_relays));
    if !peer.their_relays.is_empty() {
        println!("  their relays: {}", relays(&peer.their_relays));
    }
    if let Some(code) = peer.safety_code {
        println!("  safety code: {} ({})", code.emoji(), code.words());
    }
    if let Some(link) = &peer.link {
        println!("  link: {link}");
    }
}

fn print_relays(relays: &[RelayEntry], json: bool) {
    if json {
        print_json(&Value::Array(
            relays
                .iter()
                .map(|e| json!({ "url": e.url.to_string(), "ext": e.ext }))
                .collect(),
        ));
    } else if relays.is_empty() {
        eprintln!("the relay list is empty");
    } else {
        for entry in relays {
            println!("{}", entry.url);
        }
    }
}

fn probe_json(probe: &RelayProbe) -> Value {
    json!({
        "relay": probe.relay.to_string(),
        "healthy": probe.is_healthy(),
        // Whole milliseconds: a script wants 3, not 2.8419169999999996.
        "latency_ms": probe.latency.map(|d| d.as_millis().max(1) as u64),
        "info": probe.info,
        "error": probe.error.as_ref().map(ToString::to_string),
    })
}

fn print_probe(probe: &RelayProbe) {
    match (&probe.info, &probe.error) {
        (Some(info), None) => {
            let latency = probe.latency.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            println!(
                "{} healthy, {latency:.1} ms, {} {} (protocol {})",
                probe.relay, info.software, info.version, info.protocol
            );
            println!(
                "  limits: message {} bytes, receive {}, pending {}, UDP {}",
                info.limits.max_message_bytes,
                info.limits.max_receive_limit,
                info.limits.max_pending_per_mailbox,
                info.udp_port
                    .map_or("off".to_owned(), |p| format!("port {p}"))
            );
            if info.api_key_required {
                println!("  requires an API key in ext");
            }
            if !info.peers.is_empty() {
                println!("  peers: {}", info.peers.join(" "));
            }
        }
        (_, Some(error)) => println!("{} unhealthy: {error}", probe.relay),
        (None, None) => println!("{} unhealthy: no information document", probe.relay),
    }
}
