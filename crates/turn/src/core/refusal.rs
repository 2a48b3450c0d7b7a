//! Why the core refuses a request: one variant per answer, each mapped to its ERROR-CODE (RFC 8489 §14.8,
//! RFC 8656 §19) and a reason phrase, so no code and phrase are written by hand at the call sites.

use peercall_stun::error_code::{self as code, reason};

/// A refused request. [`Refusal::code`] and [`Refusal::reason`] give the ERROR-CODE attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// 400: a required attribute is missing or malformed.
    BadRequest,
    /// 400: USERNAME, REALM or NONCE missing from a request that carries MESSAGE-INTEGRITY.
    MissingCredentials,
    /// 400: CHANNEL-NUMBER missing or outside the channel range.
    BadChannelNumber,
    /// 400: ChannelBind without XOR-PEER-ADDRESS.
    MissingPeerAddress,
    /// 400: the channel is bound to another peer, or the peer to another channel.
    ChannelConflict,
    /// 401: no MESSAGE-INTEGRITY, an unknown user, or a MAC that does not verify.
    Unauthenticated,
    /// 403: the peer address is refused by the relay policy.
    Forbidden,
    /// 420: comprehension-required attributes the server does not know.
    UnknownAttribute,
    /// 437: no allocation on this 5-tuple (or one already exists, for Allocate).
    AllocationMismatch,
    /// 438: the nonce expired or belongs to another client.
    StaleNonce,
    /// 440: no relay address of the requested family.
    AddressFamilyNotSupported,
    /// 441: a request on an allocation with another user's credentials.
    WrongCredentials,
    /// 442: REQUESTED-TRANSPORT other than UDP.
    UnsupportedTransport,
    /// 443: the peer's family has no relayed address on this allocation.
    PeerAddressFamilyMismatch,
    /// 486: the user's allocation quota.
    QuotaReached,
    /// 486: the client address's allocation quota.
    ClientQuotaReached,
    /// 508: the server's capacity (total quota, relay ports, a reservation gone).
    InsufficientCapacity,
    /// 508: the allocation's permission cap.
    TooManyPermissions,
    /// 508: the allocation's channel (or permission) cap, for ChannelBind.
    TooManyChannels,
    /// 500: the answer did not fit its buffer.
    ServerError,
}

impl Refusal {
    /// The ERROR-CODE number.
    pub fn code(self) -> u16 {
        match self {
            Refusal::BadRequest
            | Refusal::MissingCredentials
            | Refusal::BadChannelNumber
            | Refusal::MissingPeerAddress
            | Refusal::ChannelConflict => code::BAD_REQUEST,
            Refusal::Unauthenticated => code::UNAUTHENTICATED,
            Refusal::Forbidden => code::FORBIDDEN,
            Refusal::UnknownAttribute => code::UNKNOWN_ATTRIBUTE,
            Refusal::AllocationMismatch => code::ALLOCATION_MISMATCH,
            Refusal::StaleNonce => code::STALE_NONCE,
            Refusal::AddressFamilyNotSupported => code::ADDRESS_FAMILY_NOT_SUPPORTED,
            Refusal::WrongCredentials => code::WRONG_CREDENTIALS,
            Refusal::UnsupportedTransport => code::UNSUPPORTED_TRANSPORT_PROTOCOL,
            Refusal::PeerAddressFamilyMismatch => code::PEER_ADDRESS_FAMILY_MISMATCH,
            Refusal::QuotaReached | Refusal::ClientQuotaReached => code::ALLOCATION_QUOTA_REACHED,
            Refusal::InsufficientCapacity
            | Refusal::TooManyPermissions
            | Refusal::TooManyChannels => code::INSUFFICIENT_CAPACITY,
            Refusal::ServerError => code::SERVER_ERROR,
        }
    }

    /// The reason phrase: the RFC's, with what went wrong where the code alone does not say it.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MissingCredentials => "Bad Request: USERNAME, REALM and NONCE are required",
            Refusal::BadChannelNumber => "Bad Request: CHANNEL-NUMBER missing or out of range",
            Refusal::MissingPeerAddress => "Bad Request: XOR-PEER-ADDRESS missing",
            Refusal::ChannelConflict => "Bad Request: channel or peer already bound differently",
            Refusal::ClientQuotaReached => {
                "Allocation Quota Reached: too many allocations from your address"
            }
            Refusal::TooManyPermissions => {
                "Insufficient Capacity: too many permissions on this allocation"
            }
            Refusal::TooManyChannels => {
                "Insufficient Capacity: too many channels or permissions on this allocation"
            }
            other => reason(other.code()),
        }
    }

    /// Whether the answer carries REALM and NONCE, so the client can retry with credentials (401, 438).
    pub fn with_nonce(self) -> bool {
        matches!(self, Refusal::Unauthenticated | Refusal::StaleNonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_an_rfc_code_and_a_phrase_that_starts_with_the_rfcs() {
        let all = [
            Refusal::BadRequest,
            Refusal::MissingCredentials,
            Refusal::BadChannelNumber,
            Refusal::MissingPeerAddress,
            Refusal::ChannelConflict,
            Refusal::Unauthenticated,
            Refusal::Forbidden,
            Refusal::UnknownAttribute,
            Refusal::AllocationMismatch,
            Refusal::StaleNonce,
            Refusal::AddressFamilyNotSupported,
            Refusal::WrongCredentials,
            Refusal::UnsupportedTransport,
            Refusal::PeerAddressFamilyMismatch,
            Refusal::QuotaReached,
            Refusal::ClientQuotaReached,
            Refusal::InsufficientCapacity,
            Refusal::TooManyPermissions,
            Refusal::TooManyChannels,
            Refusal::ServerError,
        ];
        for r in all {
            let rfc = reason(r.code());
            assert_ne!(rfc, "Error", "{r:?} has no RFC code");
            assert!(r.reason().starts_with(rfc), "{r:?}: {}", r.reason());
        }
    }
}
