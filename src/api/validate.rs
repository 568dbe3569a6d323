//! Request validation: names, ids and user ids.

/// Longest object id (and space name).
pub const MAX_NAME_LEN: usize = 128;
/// Longest user id accepted.
pub const MAX_USER_ID_LEN: usize = 256;

/// `[A-Za-z0-9._-]`, 1 to 128 bytes, no leading dot: safe as a single path
/// segment and as an S3 key segment.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a name was refused, for the error message.
pub fn name_problem(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("must not be empty")
    } else if s.len() > MAX_NAME_LEN {
        Some("must be at most 128 bytes")
    } else if s.starts_with('.') {
        Some("must not start with a dot")
    } else if !is_valid_name(s) {
        Some("may only contain A-Z, a-z, 0-9, '.', '_' and '-'")
    } else {
        None
    }
}

/// A fresh random object id: 32 lower-case hex characters.
pub fn generate_id() -> String {
    let mut b = [0u8; 16];
    // The system RNG failing is not recoverable anywhere in the process.
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_valid_name("photo-1.jpg"));
        assert!(is_valid_name(&"a".repeat(128)));
        for bad in ["", ".hidden", "../x", "a/b", "a b", "é", &"a".repeat(129)] {
            assert!(!is_valid_name(bad), "{bad:?}");
            assert!(name_problem(bad).is_some());
        }
        assert!(is_valid_name(&generate_id()));
    }
}
