//! Names: object ids, space names, user ids and generated ids.
//!
//! Every naming rule of the service lives here, once: the API validates
//! requests with it, the configuration validates space names with it, and
//! each blob store checks every path segment with it again, so that no key
//! can name a file outside a store's root. Pseudonyms are named by their
//! lower-case hex form (the `Display` of the crypto `Pseudonym`), which these
//! rules accept.
//!
//! The rules: a name is `[A-Za-z0-9._-]`, 1 to 128 bytes, no leading dot
//! ([`check_name`]); a user id is any string of 1 to 256 bytes
//! ([`check_user_id`]); [`random_id`] is 128 random bits in hex (generated
//! object ids, job ids, temporary file names).
//!
//! This module imports nothing of the crate and does no I/O.

/// Longest object id, space name or stored path segment, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest user id accepted.
pub const MAX_USER_ID_LEN: usize = 256;

/// Why a name or user id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("must not be empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`] (names) or [`MAX_USER_ID_LEN`] (user ids).
    #[error("must be at most {0} bytes")]
    TooLong(usize),
    /// Starts with a dot (which also keeps `.`, `..` and hidden files out).
    #[error("must not start with a dot")]
    LeadingDot,
    /// A byte outside `[A-Za-z0-9._-]`.
    #[error("may only contain A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadCharacter,
}

/// Checks an object id, space name or stored path segment:
/// `[A-Za-z0-9._-]`, 1 to 128 bytes, no leading dot. Such a name is safe as
/// a single path segment and as an S3 key segment.
///
/// # Errors
/// The first rule the name breaks.
pub fn check_name(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        Err(NameError::Empty)
    } else if s.len() > MAX_NAME_LEN {
        Err(NameError::TooLong(MAX_NAME_LEN))
    } else if s.starts_with('.') {
        Err(NameError::LeadingDot)
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Err(NameError::BadCharacter)
    } else {
        Ok(())
    }
}

/// Whether [`check_name`] accepts `s`.
pub fn is_valid_name(s: &str) -> bool {
    check_name(s).is_ok()
}

/// Checks a user id: 1 to [`MAX_USER_ID_LEN`] bytes of any UTF-8. User ids
/// never reach storage or logs (only their pseudonyms do), so their content
/// is not restricted.
///
/// # Errors
/// [`NameError::Empty`] or [`NameError::TooLong`].
pub fn check_user_id(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        Err(NameError::Empty)
    } else if s.len() > MAX_USER_ID_LEN {
        Err(NameError::TooLong(MAX_USER_ID_LEN))
    } else {
        Ok(())
    }
}

/// A fresh random id: 32 lower-case hex characters (128 bits from the system
/// CSPRNG), a valid name. Used for generated object ids, job ids and
/// temporary file names.
///
/// # Panics
/// If the system random number generator fails, which nothing in the
/// process could recover from.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("photo-1.jpg"));
        assert!(is_valid_name(&"a".repeat(MAX_NAME_LEN)));
        for (bad, why) in [
            ("", NameError::Empty),
            (".hidden", NameError::LeadingDot),
            ("..", NameError::LeadingDot),
            ("../x", NameError::LeadingDot),
            ("a/b", NameError::BadCharacter),
            ("a b", NameError::BadCharacter),
            ("é", NameError::BadCharacter),
            (&"a".repeat(MAX_NAME_LEN + 1), NameError::TooLong(128)),
        ] {
            assert_eq!(check_name(bad), Err(why), "{bad:?}");
        }
        assert!(is_valid_name(&random_id()));
        assert_ne!(random_id(), random_id());
    }

    #[test]
    fn user_ids() {
        assert!(check_user_id("13800138000").is_ok());
        assert!(check_user_id("名字 with spaces/and slashes").is_ok());
        assert_eq!(check_user_id(""), Err(NameError::Empty));
        assert_eq!(
            check_user_id(&"u".repeat(MAX_USER_ID_LEN + 1)),
            Err(NameError::TooLong(MAX_USER_ID_LEN))
        );
    }
}
