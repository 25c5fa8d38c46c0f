//! Opaque 128-bit identifiers, printed and parsed in the canonical UUID text form.
//!
//! The domain does not generate ids (that is the `IdGenerator` port's job) and does
//! not depend on a UUID crate: an id is 16 bytes with a textual form.

use std::fmt;
use std::str::FromStr;

/// Why a text could not be read as an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidId;

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a valid UUID")
    }
}

impl std::error::Error for InvalidId {}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (or the 32 hex digits without hyphens).
fn parse_uuid_text(s: &str) -> Result<u128, InvalidId> {
    let bytes = s.as_bytes();
    let hex: Vec<u8> = match bytes.len() {
        32 => bytes.to_vec(),
        36 => {
            for pos in [8, 13, 18, 23] {
                if bytes[pos] != b'-' {
                    return Err(InvalidId);
                }
            }
            bytes.iter().copied().filter(|b| *b != b'-').collect()
        }
        _ => return Err(InvalidId),
    };
    if hex.len() != 32 {
        return Err(InvalidId);
    }
    let mut value: u128 = 0;
    for b in hex {
        let digit = (b as char).to_digit(16).ok_or(InvalidId)?;
        value = (value << 4) | u128::from(digit);
    }
    Ok(value)
}

fn write_uuid_text(value: u128, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let hex = format!("{value:032x}");
    write!(
        f,
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            /// Wraps raw 128 bits (for adapters that store ids as UUIDs).
            #[must_use]
            pub const fn from_u128(value: u128) -> Self {
                Self(value)
            }

            /// The raw 128 bits.
            #[must_use]
            pub const fn as_u128(self) -> u128 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_uuid_text(self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_uuid_text(s).map(Self)
            }
        }
    };
}

define_id!(
    /// Identifies a user account.
    UserId
);
define_id!(
    /// Identifies a chat (one conversation tree).
    ChatId
);
define_id!(
    /// Identifies a message, a node of a conversation tree.
    MessageId
);
define_id!(
    /// Identifies a prompt template.
    TemplateId
);
define_id!(
    /// Identifies a preset.
    PresetId
);
define_id!(
    /// Identifies a personal API key.
    ApiKeyId
);
define_id!(
    /// Identifies a refresh token (or the family of rotated refresh tokens it belongs to).
    TokenId
);
define_id!(
    /// Identifies a generation record.
    GenerationId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = ChatId::from_u128(0x0192_3e4f_5a6b_7c8d_9e0f_1a2b_3c4d_5e6f);
        let text = id.to_string();
        assert_eq!(text, "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f");
        assert_eq!(text.parse::<ChatId>(), Ok(id));
    }

    #[test]
    fn uppercase_and_unhyphenated_forms_are_accepted() {
        let id: MessageId = "01923E4F5A6B7C8D9E0F1A2B3C4D5E6F".parse().unwrap();
        assert_eq!(id.to_string(), "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "not-a-uuid",
            "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6",
            "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6g",
            "01923e4f+5a6b-7c8d-9e0f-1a2b3c4d5e6f",
            "01923e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f0",
            "ééééééééééééééééé",
        ] {
            assert_eq!(bad.parse::<UserId>(), Err(InvalidId), "{bad:?}");
        }
    }
}
