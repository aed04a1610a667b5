//! Names of topics and subscribers, and the limits every backend shares.

use crate::error::{Error, Result};

/// Longest topic or subscriber name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest state key.
pub const MAX_STATE_KEY_BYTES: usize = 1024;

/// Checks a topic or subscriber name: 1 to 128 characters from
/// `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`. Names end up in URLs,
/// file names of tools and metric labels, so they stay boring.
pub fn validate_name(kind: &'static str, name: &str) -> Result<()> {
    let rule = "use 1 to 128 characters from A-Z a-z 0-9 . _ -, not starting with . or -";
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
            rule,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rules() {
        for good in ["orders", "a", "Orders.v2", "x_y-z", &"n".repeat(128)] {
            assert!(validate_name("topic", good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", "ü", &"n".repeat(129)] {
            assert!(validate_name("topic", bad).is_err(), "{bad}");
        }
    }
}
