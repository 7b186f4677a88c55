//! Header names as the most permissive backend reads them.
//!
//! CGI-style environments (and many WSGI, Rack and PHP servers) turn a header name into a variable
//! such as `HTTP_X_USER`: ASCII case is lost and `-` and `_` become the same character, so
//! `x-user`, `X_User` and `x_user` are one header to the application. Every filter that matches
//! on a header name, or writes one the upstream trusts, compares names in this folded form, so that
//! no spelling the application merges can slip past a rule, a rate-limit key or an output-header
//! strip (issue 12, findings 2 and 5).

/// `name` folded: ASCII lower case, `_` read as `-`.
pub fn fold(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Whether `a` and `b` are one header to a backend that folds names ([`fold`]), without
/// allocating.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold_byte(*x) == fold_byte(*y))
}

fn fold_byte(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn case_and_underscores_fold() {
        assert_eq!(fold("X_Jwt-SUB"), "x-jwt-sub");
        assert_eq!(fold("é_A"), "é-a", "non-ASCII bytes are kept as they are");
        for spelling in ["x-api-key", "X_API_KEY", "x-api_key", "X-Api-Key"] {
            assert!(same(spelling.as_bytes(), b"x-api-key"), "{spelling}");
        }
        assert!(!same(b"x-api-key", b"x-api-keys"));
        assert!(!same(b"x-apikey", b"x-api-key"));
    }
}
