//! The error a send request's rules answer: 422 naming the offending field.

/// A rule broken by a request: answered as 422 with `field` set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub code: &'static str,
    pub message: String,
    pub field: String,
}

impl FieldError {
    pub fn new(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: field.into(),
        }
    }

    /// The same error for a message inside a batch: `messages[3].channels[0]`.
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Turns a serde data error at `path` (serde_path_to_error's notation, "." for the root)
/// into a [`FieldError`] naming the offending field under `prefix`.
pub fn serde_field_error(prefix: &str, path: &str, message: &str) -> FieldError {
    let mut field = match (prefix.is_empty(), path == "." || path.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => path.to_owned(),
        (false, false) => format!("{prefix}.{path}"),
    };
    let named = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("missing field") || message.starts_with("unknown field"));
    if let Some(name) = named {
        if !field.ends_with(name) {
            field = if field.is_empty() {
                name.to_owned()
            } else {
                format!("{field}.{name}")
            };
        }
    }
    let code = if message.starts_with("missing field") {
        "missing_field"
    } else if message.starts_with("unknown field") {
        "unknown_field"
    } else {
        "invalid_value"
    };
    // serde's messages carry " at line L column C" for JSON input; the field says where.
    let message = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    FieldError::new(code, field, message)
}
