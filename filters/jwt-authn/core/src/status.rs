//! Why a request was refused, with Envoy jwt_authn's status texts (jwt_verify_lib `status.cc`), so
//! that clients and dashboards see the same bodies whether Envoy's native filter or ours answered.

/// A failed authentication. `message()` is the 401/403 body, `http_status()` the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthError {
    /// No token at a configured location while `requireToken` is set.
    Missing,
    NotYetValid,
    Expired,
    /// Not three dot-separated, non-empty sections (or over the size bound).
    BadFormat,
    /// Header is not base64url, not JSON, or has members of the wrong type.
    HeaderParse,
    /// `alg` is `none`, unknown, or not one we verify.
    AlgNotImplemented,
    /// Payload is not base64url, not a JSON object, or a registered claim has the wrong type.
    PayloadParse,
    SignatureParse,
    /// `iss` is missing, empty, or no rule has that issuer (or the rule does not read this location).
    UnknownIssuer,
    /// `aud` does not contain any configured audience (403, like Envoy).
    AudienceNotAllowed,
    /// The signature does not verify with any candidate key.
    VerificationFail,
    /// No key in the JWKS matches the token's `kid`/`alg`.
    KidAlgMismatch,
    /// Tokens that differ were found (in several locations): one request carries one identity.
    MultipleTokens,
    /// The host's `verify_signature` failed (not "the signature is invalid": the call itself):
    /// the token is refused rather than re-checked on the other path (`host_verify`).
    HostVerifyFailed,
    /// Remote JWKS: no usable keys (never fetched successfully, or the wait for the first fetch ran out).
    FetchFailed,
}

impl AuthError {
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => "Jwt is missing",
            AuthError::NotYetValid => "Jwt not yet valid",
            AuthError::Expired => "Jwt is expired",
            AuthError::BadFormat => "Jwt is not in the form of Header.Payload.Signature",
            AuthError::HeaderParse => "Jwt header is an invalid Base64url input or an invalid JSON",
            AuthError::AlgNotImplemented => "Jwt header [alg] field value is invalid",
            AuthError::PayloadParse => "Jwt payload is an invalid Base64 or an invalid JSON",
            AuthError::SignatureParse => "Jwt signature is an invalid Base64",
            AuthError::UnknownIssuer => "Jwt issuer is not configured",
            AuthError::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            AuthError::VerificationFail => "Jwt verification fails",
            AuthError::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            AuthError::FetchFailed => "Jwks remote fetch is failed",
            // Envoy has no text for this (it verifies each and leaves the principal undefined).
            AuthError::MultipleTokens => "Jwt verification fails",
            // Not the client's fault, but nothing verified the token: Envoy's failure text.
            AuthError::HostVerifyFailed => "Jwt verification fails",
        }
    }

    /// 403 for an audience mismatch (the token is authentic, just not for us), 401 otherwise.
    pub fn http_status(self) -> u32 {
        match self {
            AuthError::AudienceNotAllowed => 403,
            _ => 401,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_texts_follow_envoy() {
        assert_eq!(AuthError::AudienceNotAllowed.http_status(), 403);
        assert_eq!(AuthError::Expired.http_status(), 401);
        assert_eq!(AuthError::Missing.message(), "Jwt is missing");
        assert_eq!(
            AuthError::FetchFailed.message(),
            "Jwks remote fetch is failed"
        );
        assert_eq!(
            AuthError::UnknownIssuer.message(),
            "Jwt issuer is not configured"
        );
    }
}
