//! The syntax of ids and addresses a send request carries.

use super::error::FieldError;
pub use crate::domain::ids::is_idempotency_key;
use crate::domain::ChannelType;

/// Ids of per-app objects (templates, tags, lists …): 1-64 of `[A-Za-z0-9_.:-]`.
pub fn check_id(s: &str, field: &str) -> Result<(), FieldError> {
    if is_idempotency_key(s) {
        Ok(())
    } else {
        Err(FieldError::new(
            "invalid_value",
            field,
            "must be 1-64 characters of [A-Za-z0-9_.:-]",
        ))
    }
}

pub fn is_user_id(s: &str) -> bool {
    (1..=128).contains(&s.chars().count())
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub fn is_address_for(ty: ChannelType, addr: &str) -> bool {
    match ty {
        ChannelType::SmsCmpp | ChannelType::Jsms => {
            let digits = addr.strip_prefix('+').unwrap_or(addr);
            (5..=21).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
        }
        ChannelType::Email => match addr.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && addr.len() <= 254
                    && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        },
        ChannelType::Webhook => {
            (addr.starts_with("http://") || addr.starts_with("https://")) && addr.len() <= 2048
        }
        _ => is_user_id(addr),
    }
}
