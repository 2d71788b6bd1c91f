//! STUN Binding (RFC 8489) on the UDP check port, so that a WebRTC stack
//! or a browser can use the relay as its STUN server.
//!
//! [`is_stun`] tells a STUN message from a check datagram by its first byte
//! and the magic cookie (`spec/protocol.md` §8.9); [`binding_response`]
//! answers a Binding request with a success response that carries only
//! XOR-MAPPED-ADDRESS (the request's source): 32 bytes for IPv4, 44 for
//! IPv6, so never more than the request plus that attribute's 12 or 24
//! bytes. Everything else (indications, responses, other methods, requests
//! with comprehension-required attributes, such as a USERNAME or a
//! CHANGE-REQUEST) gets no answer, as a UDP answer to a spoofed source must
//! not be an amplifier; this module does no authentication, no FINGERPRINT,
//! no RFC 5780 behaviour discovery and no TURN. Rate limits and metrics are
//! the caller's (`Relay::answer_datagram`).

use std::net::SocketAddr;

use stun_types::attribute::{Attribute, XorMappedAddress};
use stun_types::message::MessageWriteVec;
use stun_types::message::{BINDING, Message, MessageClass, MessageWrite, MessageWriteExt};

/// The STUN magic cookie, bytes 4..8 of every RFC 5389/8489 message.
pub(crate) const MAGIC_COOKIE: [u8; 4] = 0x2112_A442_u32.to_be_bytes();
/// A STUN header's length, the smallest message.
pub(crate) const HEADER_LEN: usize = 20;

/// Why a STUN message gets no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StunError {
    /// The header's length is not the datagram's, or an attribute does not parse.
    #[error("malformed STUN message")]
    Malformed,
    /// A message other than a Binding request.
    #[error("not a Binding request")]
    NotBindingRequest,
    /// The request has an attribute this server must understand but does not.
    #[error("comprehension-required attribute {0:#06x}")]
    UnknownRequiredAttribute(u16),
    /// The response would be larger than the bound (cannot happen for a
    /// request that parsed; checked all the same).
    #[error("the response would exceed the size bound")]
    TooLarge,
}

/// Whether `datagram` is a STUN message rather than a check datagram: at
/// least a header, the two top bits of the first byte zero, and the magic
/// cookie at bytes 4..8. (A check datagram starts with `C`, 0x43, and has
/// its version byte, 0x01, at byte 4: it never matches.)
pub(crate) fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN
        && datagram[0] & 0xc0 == 0
        && datagram.get(4..8) == Some(&MAGIC_COOKIE[..])
}

/// The largest answer to a request of `request_len` bytes from `source`:
/// the request's length plus the XOR-MAPPED-ADDRESS attribute that RFC 8489
/// requires (4 bytes of attribute header and 8 of IPv4 or 20 of IPv6
/// address).
pub(crate) fn max_response_len(request_len: usize, source: SocketAddr) -> usize {
    let attribute = if source.is_ipv4() { 12 } else { 24 };
    request_len + attribute
}

/// The success response to the Binding request `datagram` from `source`.
pub(crate) fn binding_response(datagram: &[u8], source: SocketAddr) -> Result<Vec<u8>, StunError> {
    // The header's length must be exactly the rest of the datagram (one
    // message per datagram), checked before the codec sees the attributes.
    let declared = datagram
        .get(2..4)
        .map(|len| usize::from(u16::from_be_bytes([len[0], len[1]])));
    if declared != Some(datagram.len().saturating_sub(HEADER_LEN))
        || !datagram.len().is_multiple_of(4)
    {
        return Err(StunError::Malformed);
    }
    let request = Message::from_bytes(datagram).map_err(|_| StunError::Malformed)?;
    if !(request.has_class(MessageClass::Request) && request.has_method(BINDING)) {
        return Err(StunError::NotBindingRequest);
    }
    if let Some((_, attribute)) = request
        .iter_attributes()
        .find(|(_, attribute)| attribute.get_type().comprehension_required())
    {
        return Err(StunError::UnknownRequiredAttribute(
            attribute.get_type().value(),
        ));
    }
    let mut response = Message::builder_success(&request, MessageWriteVec::with_capacity(44));
    response
        .add_attribute(&XorMappedAddress::new(source, request.transaction_id()))
        .map_err(|_| StunError::TooLarge)?;
    let response = response.finish();
    if response.len() > max_response_len(datagram.len(), source) {
        return Err(StunError::TooLarge);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A Binding request with transaction id `id` and `attributes` (raw,
    /// already padded).
    fn request(id: [u8; 12], attributes: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x00, 0x01];
        bytes.extend_from_slice(&u16::try_from(attributes.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&MAGIC_COOKIE);
        bytes.extend_from_slice(&id);
        bytes.extend_from_slice(attributes);
        bytes
    }

    /// Decodes XOR-MAPPED-ADDRESS by hand (RFC 8489 §14.2), independently of
    /// the codec.
    fn xor_mapped(response: &[u8]) -> SocketAddr {
        assert_eq!(&response[0..2], &[0x01, 0x01], "Binding success response");
        assert_eq!(&response[20..22], &[0x00, 0x20], "XOR-MAPPED-ADDRESS");
        let port = u16::from_be_bytes([response[26], response[27]]) ^ 0x2112;
        let family = response[25];
        let ip: std::net::IpAddr = match family {
            1 => {
                let mut ip = [0u8; 4];
                for (i, byte) in ip.iter_mut().enumerate() {
                    *byte = response[28 + i] ^ MAGIC_COOKIE[i];
                }
                ip.into()
            }
            2 => {
                let mut key = MAGIC_COOKIE.to_vec();
                key.extend_from_slice(&response[8..20]);
                let mut ip = [0u8; 16];
                for (i, byte) in ip.iter_mut().enumerate() {
                    *byte = response[28 + i] ^ key[i];
                }
                ip.into()
            }
            other => panic!("family {other}"),
        };
        SocketAddr::new(ip, port)
    }

    #[test]
    fn a_binding_request_gets_the_source_address_xored() {
        let id = [7u8; 12];
        let source: SocketAddr = "203.0.113.7:54321".parse().unwrap();
        let request = request(id, &[]);
        assert!(is_stun(&request));
        let response = binding_response(&request, source).unwrap();
        assert_eq!(response.len(), 32);
        assert_eq!(&response[4..8], &MAGIC_COOKIE);
        assert_eq!(&response[8..20], &id, "the transaction id is echoed");
        assert_eq!(xor_mapped(&response), source);

        let source: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let response = binding_response(&request, source).unwrap();
        assert_eq!(response.len(), 44);
        assert_eq!(xor_mapped(&response), source);
        assert!(response.len() <= max_response_len(request.len(), source));
    }

    /// The example of `spec/protocol.md` §8.9, byte for byte.
    #[test]
    fn the_spec_example() {
        let request = request([7; 12], &[]);
        let response = binding_response(&request, "203.0.113.7:54321".parse().unwrap()).unwrap();
        let mut expected = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        expected.extend_from_slice(&[7; 12]);
        expected.extend_from_slice(&[
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xf5, 0x23, 0xea, 0x12, 0xd5, 0x45,
        ]);
        assert_eq!(response, expected);
    }

    #[test]
    fn optional_attributes_are_ignored_required_ones_refused() {
        let source: SocketAddr = "198.51.100.1:1".parse().unwrap();
        // SOFTWARE (0x8022) "abc", padded to 4 bytes.
        let software = [0x80, 0x22, 0x00, 0x03, b'a', b'b', b'c', 0x00];
        let response = binding_response(&request([1; 12], &software), source).unwrap();
        assert_eq!(xor_mapped(&response), source);
        // CHANGE-REQUEST (0x0003, RFC 5780): not understood, no answer.
        let change = [0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6];
        assert_eq!(
            binding_response(&request([1; 12], &change), source),
            Err(StunError::UnknownRequiredAttribute(3))
        );
    }

    #[test]
    fn other_messages_and_malformed_ones_get_no_answer() {
        let source: SocketAddr = "198.51.100.1:1".parse().unwrap();
        let mut indication = request([2; 12], &[]);
        indication[1] = 0x11; // Binding indication
        assert_eq!(
            binding_response(&indication, source),
            Err(StunError::NotBindingRequest)
        );
        let mut response = request([2; 12], &[]);
        response[0] = 0x01; // Binding success response
        assert_eq!(
            binding_response(&response, source),
            Err(StunError::NotBindingRequest)
        );
        // A length that is not the datagram's.
        let mut long = request([2; 12], &[]);
        long[3] = 8;
        assert_eq!(binding_response(&long, source), Err(StunError::Malformed));
        // An attribute that runs past the end.
        let cut = request([2; 12], &[0x80, 0x22, 0x00, 0x08, b'a', b'b', b'c', 0]);
        assert_eq!(binding_response(&cut, source), Err(StunError::Malformed));
    }

    #[test]
    fn check_datagrams_are_never_taken_for_stun() {
        // Any check datagram starts with "CNID" and version 1.
        let mut check = b"CNID\x01\x01".to_vec();
        check.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        check.resize(74, 0);
        assert!(!is_stun(&check));
        // Short datagrams and a wrong cookie are not STUN.
        assert!(!is_stun(&request([0; 12], &[])[..19]));
        let mut wrong = request([0; 12], &[]);
        wrong[7] ^= 1;
        assert!(!is_stun(&wrong));
    }
}
