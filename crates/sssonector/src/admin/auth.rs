//! The admin endpoint's bearer token: read from a file or the environment, kept only as its
//! SHA-256 digest, and compared in constant time.

use std::path::Path;

use super::AdminError;

/// The environment variable that carries the token when `admin.token_file` is not set.
pub(crate) const TOKEN_ENV: &str = "SSSONECTOR_ADMIN_TOKEN";

/// The shortest token accepted: 16 characters (128 bits of a hex or base64 secret).
const MIN_LEN: usize = 16;

/// A bearer token. Its text is not kept, so it cannot reach a log or a status page.
#[derive(Clone)]
pub(crate) struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Token {
    /// A token from its text, which must be at least 16 characters once surrounding white
    /// space is trimmed. `origin` names where it came from, for the error.
    pub(crate) fn new(text: &str, origin: &str) -> Result<Self, AdminError> {
        let text = text.trim();
        if text.len() < MIN_LEN {
            return Err(AdminError::WeakToken {
                origin: origin.to_owned(),
                min: MIN_LEN,
            });
        }
        Ok(Self {
            digest: digest(text.as_bytes()),
        })
    }

    /// The token in `file` if given, else in [`TOKEN_ENV`] from `env`, else none.
    pub(crate) fn load(
        file: Option<&Path>,
        env: Option<String>,
    ) -> Result<Option<Self>, AdminError> {
        if let Some(file) = file {
            let text = std::fs::read_to_string(file).map_err(|e| AdminError::TokenFile {
                file: file.to_owned(),
                error: e,
            })?;
            return Self::new(&text, &format!("admin.token_file ({})", file.display())).map(Some);
        }
        match env {
            Some(text) => Self::new(&text, TOKEN_ENV).map(Some),
            None => Ok(None),
        }
    }

    /// Whether an `Authorization` header value carries this token as `Bearer <token>`. Both
    /// sides are hashed first, so the comparison takes the same time whatever the length or
    /// content of the guess.
    pub(crate) fn verify(&self, header: Option<&[u8]>) -> bool {
        let Some(value) = header else { return false };
        let Some(given) = value
            .strip_prefix(b"Bearer ")
            .or_else(|| value.strip_prefix(b"bearer "))
        else {
            return false;
        };
        let given = digest(given.trim_ascii());
        given
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_same_token() {
        let token = Token::new("0123456789abcdef0123\n", "test").unwrap();
        assert!(token.verify(Some(b"Bearer 0123456789abcdef0123")));
        assert!(!token.verify(Some(b"Bearer 0123456789abcdef0124")));
        assert!(!token.verify(Some(b"Basic 0123456789abcdef0123")));
        assert!(!token.verify(Some(b"0123456789abcdef0123")));
        assert!(!token.verify(None));
    }

    #[test]
    fn refuses_a_short_token_naming_its_origin() {
        let err = Token::new("short", "admin.token_file (t)").unwrap_err();
        assert_eq!(
            err.to_string(),
            "admin.token_file (t): the token must be at least 16 characters"
        );
    }

    #[test]
    fn never_shows_the_token() {
        let token = Token::new("0123456789abcdef0123", "test").unwrap();
        assert_eq!(format!("{token:?}"), "Token(..)");
    }
}
