//! The Redis key of everything the store keeps (see the layout in the
//! module documentation of [`super`]) and the members naming mailboxes in
//! the global indexes.

use connectoid_protocol::b64;

use crate::store::{Bucket, MailboxId, SourcePrefix};

/// Key names; see the module documentation.
pub(super) struct Keys {
    pub(super) prefix: String,
}

impl Keys {
    pub(super) fn tag(&self, mailbox: &MailboxId) -> String {
        format!("{}:{{{}}}", self.prefix, b64::encode(&mailbox.0))
    }
    pub(super) fn meta(&self, m: &MailboxId) -> String {
        format!("{}:meta", self.tag(m))
    }
    pub(super) fn msgs(&self, m: &MailboxId) -> String {
        format!("{}:msgs", self.tag(m))
    }
    pub(super) fn question(&self, m: &MailboxId) -> String {
        format!("{}:q", self.tag(m))
    }
    pub(super) fn floor(&self, m: &MailboxId) -> String {
        format!("{}:floor", self.tag(m))
    }
    /// The Pub/Sub channel on which stored sends are announced.
    pub(super) fn wake_channel(&self) -> String {
        format!("{}:wake", self.prefix)
    }
    pub(super) fn global(&self, name: &str) -> String {
        format!("{}:{{global}}:{name}", self.prefix)
    }
    pub(super) fn bucket(&self, bucket: &Bucket) -> String {
        fn source(prefix: &SourcePrefix) -> String {
            match prefix {
                SourcePrefix::V4(b) => format!("v4-{}", hex(b)),
                SourcePrefix::V6(b) => format!("v6-{}", hex(b)),
            }
        }
        match bucket {
            Bucket::SendPerSource(s) => format!("{}:{{src:send:{}}}", self.prefix, source(s)),
            Bucket::CheckPerSource(s) => format!("{}:{{src:check:{}}}", self.prefix, source(s)),
            Bucket::SendPerMailbox(m) => format!("{}:rl:send", self.tag(m)),
            Bucket::CheckPerMailbox(m) => format!("{}:rl:check", self.tag(m)),
        }
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The member naming a mailbox in the global indexes.
pub(super) fn member(mailbox: &MailboxId) -> String {
    b64::encode(&mailbox.0)
}

pub(super) fn parse_member(text: &[u8]) -> Option<MailboxId> {
    let bytes = b64::decode(std::str::from_utf8(text).ok()?).ok()?;
    Some(MailboxId(bytes.try_into().ok()?))
}
