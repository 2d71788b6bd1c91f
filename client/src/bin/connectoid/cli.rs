//! The command line's shape: flags and subcommands, parsed by clap. No
//! behaviour here; `commands` does the work.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Connectoid: share a link, accept one, and exchange signaling messages with
/// peers through several relays.
#[derive(Debug, Parser)]
#[command(name = "connectoid", version = env!("CONNECTOID_VERSION"), about)]
pub(crate) struct Cli {
    /// The profile directory (keys, peers, cursors). Default: the user's data
    /// directory, e.g. ~/.local/share/connectoid.
    #[arg(long, global = true, env = "CONNECTOID_PROFILE", value_name = "DIR")]
    pub(crate) profile: Option<PathBuf>,

    /// Print machine-readable JSON on stdout (one object, or one per line
    /// for `poll` and `sync`); an error is `{"ok":false,"error":"..."}`.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Per-relay timeout of each request, in seconds.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 5.0)]
    pub(crate) timeout: f64,

    /// Never use the UDP check; HTTP only.
    #[arg(long, global = true)]
    pub(crate) no_udp: bool,

    /// Extra root certificate(s) in PEM for HTTPS relays (repeatable). With
    /// `relays add` they are also kept in the profile and trusted by every
    /// later command.
    #[arg(
        long = "root-cert",
        global = true,
        value_name = "FILE",
        env = "CONNECTOID_ROOT_CERT",
        value_delimiter = ','
    )]
    pub(crate) root_certs: Vec<PathBuf>,

    /// More log output on stderr: -v what the client does (relays, UDP or
    /// HTTP, what arrived or was rejected), -vv every request.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Make a one-time link for NICKNAME and print it.
    Share {
        /// Who the link is for (your name for them).
        nickname: String,
        /// A relay to name in the link (repeatable). Default: the profile's relays.
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<String>,
        /// App data for every relay, such as an API key.
        #[arg(long)]
        ext: Option<String>,
        /// Probe the relays and name only the N fastest healthy ones.
        #[arg(long, value_name = "N")]
        pick: Option<usize>,
        /// Wrap the link in this app URL as its connectoid parameter.
        #[arg(long, value_name = "URL")]
        app_url: Option<String>,
        /// Also draw the link as a QR code on the terminal.
        #[arg(long)]
        qr: bool,
        /// Refuse (instead of warning) when a relay does not answer or
        /// needs an API key that was not given.
        #[arg(long)]
        strict: bool,
    },
    /// Open LINK as NICKNAME and send the first message (with PAYLOAD).
    Accept {
        /// The link (bare value, connectoid=..., or an app URL carrying it).
        link: String,
        /// Your name for the link's owner.
        nickname: String,
        /// The first message's payload as JSON, such as an offer.
        #[arg(long, value_name = "JSON", default_value = "null")]
        payload: String,
        /// Serve your mailbox from these relays instead of the link's (repeatable).
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<String>,
    },
    /// Check every mailbox and print what arrived.
    Poll {
        /// Poll once and exit (the default).
        #[arg(long, conflicts_with = "watch")]
        once: bool,
        /// Keep polling until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between polls with --watch.
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        interval: f64,
    },
    /// Send PAYLOAD to NICKNAME.
    Send {
        /// The peer.
        nickname: String,
        /// The payload as JSON: quote a string in the shell, '"hello"'.
        payload: String,
        /// What the payload is.
        #[arg(long, value_enum, default_value_t = SendKind::App)]
        kind: SendKind,
    },
    /// List peers and pending shares.
    Peers,
    /// End the share with NICKNAME: notify them, delete the mailbox and the keys.
    Unshare {
        /// The peer.
        nickname: String,
    },
    /// Show the safety code to compare with NICKNAME by voice.
    SafetyCode {
        /// The peer.
        nickname: String,
    },
    /// Move your mailbox for NICKNAME to other relays and tell the peer.
    SetRelays {
        /// The peer.
        nickname: String,
        /// The new relays.
        #[arg(required = true, value_name = "URL")]
        relays: Vec<String>,
    },
    /// Work with links.
    Link {
        #[command(subcommand)]
        command: LinkCommand,
    },
    /// The profile's relay list.
    Relays {
        #[command(subcommand)]
        command: RelaysCommand,
    },
    /// Ask one relay about itself.
    Relay {
        #[command(subcommand)]
        command: RelayCommand,
    },
    /// The shared shopping list (the demo app), kept in the profile.
    List {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Print the answer to a relay's question about your mailbox for
    /// NICKNAME, for a `receive` or `delete` made by hand (curl).
    Answer {
        /// The peer whose mailbox the question is about (your share's
        /// nickname).
        nickname: String,
        /// The relay that asked (the answer is bound to its URL).
        #[arg(long, value_name = "URL")]
        relay: String,
        /// The question, as `check` returned it.
        question: String,
    },
    /// Print a shell completion script on stdout, e.g.
    /// `connectoid completions bash > ~/.local/share/bash-completion/completions/connectoid`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, e.g. `connectoid man | man -l -`.
    Man,
    /// Sync the shopping list with every peer: signal through the relays,
    /// connect peer to peer (QUIC, through NATs where they allow it), merge,
    /// disconnect; when no direct connection comes up within 10 s, send the
    /// lists through the relays (end-to-end encrypted) instead. Prints per
    /// peer which path was taken.
    Sync {
        /// Keep running: answer peers' offers and sync again after local changes.
        #[arg(long)]
        watch: bool,
        /// Seconds between polls.
        #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
        interval: f64,
        /// Seconds to wait for peers not synced yet before giving up
        /// (without --watch).
        #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
        wait: f64,
        /// Advertise and dial loopback addresses only (both peers on this machine).
        #[arg(long)]
        loopback: bool,
        /// Do not connect directly: send the list through the relays only
        /// (the peer does not learn your addresses).
        #[arg(long)]
        relays_only: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ListCommand {
    /// Add ITEM to the list.
    Add {
        /// What to buy.
        item: String,
    },
    /// Remove ITEM from the list.
    Remove {
        /// The item's text.
        item: String,
    },
    /// Print the list.
    Show,
    /// Share the list with NICKNAME: prints a one-time link for them.
    Share {
        /// Who the link is for (your name for them).
        nickname: String,
        /// They see the list but their changes are ignored.
        #[arg(long)]
        read_only: bool,
        /// A relay to name in the link (repeatable). Default: the profile's relays.
        #[arg(long = "relay", value_name = "URL")]
        relays: Vec<String>,
    },
}

/// The kinds of envelope the app sends.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SendKind {
    /// A connection offer.
    Offer,
    /// The answer to an offer.
    Answer,
    /// Anything else.
    App,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LinkCommand {
    /// Print what a link contains.
    Decode {
        /// The link.
        link: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RelaysCommand {
    /// Add a relay to the profile's list (after asking it for its
    /// information document). Root certificates given with --root-cert are
    /// kept in the profile.
    Add {
        /// The relay's URL, such as https://relay.example/.
        url: String,
        /// App data for this relay only, such as its API key.
        #[arg(long)]
        ext: Option<String>,
        /// Refuse (instead of warning) when the relay does not answer or
        /// needs an API key that was not given.
        #[arg(long)]
        strict: bool,
    },
    /// Remove a relay from the profile's list.
    Remove {
        /// The relay's URL.
        url: String,
    },
    /// Print the profile's relay list.
    List,
    /// Read every listed relay's information document: health, latency, limits.
    Probe,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RelayCommand {
    /// Print a relay's information document.
    Info {
        /// The relay's URL.
        url: String,
    },
}
