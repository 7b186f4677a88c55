//! Registry credentials: flags, or the `auths` of the docker CLI's config file.
//!
//! Why not the `docker_credential` crate (1.4): it runs the credential-helper programs the config
//! names (`credsStore` for every registry, `credHelpers` ahead of `auths`) and fails when `auth`
//! and username/password disagree. `meshward image` deliberately runs no program a config file
//! names and refuses helpers with a message saying which one (tests below pin it); adopting the
//! crate would change that behaviour, which issue #15 (a restructure) must not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// The docker CLI config (`config.json`): only what credentials need.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (the docker CLI's lookup).
pub fn default_docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// Credentials for `registry` (as in the image reference, e.g. `127.0.0.1:5000`, `docker.io`).
///
/// Explicit `username`/`password` win; otherwise the docker config file at `config_path` is
/// consulted; no file or no entry means anonymous access.
pub fn resolve(
    registry: &str,
    username: Option<&str>,
    password: Option<&str>,
    config_path: Option<&Path>,
) -> Result<RegistryAuth> {
    match (username, password) {
        (Some(u), Some(p)) => return Ok(RegistryAuth::Basic(u.to_owned(), p.to_owned())),
        (Some(_), None) | (None, Some(_)) => bail!("--username and --password go together"),
        (None, None) => {}
    }
    let Some(path) = config_path else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: DockerConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    from_config(&config, registry).with_context(|| format!("credentials in {}", path.display()))
}

fn from_config(config: &DockerConfig, registry: &str) -> Result<RegistryAuth> {
    let wanted = normalize(registry);
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| normalize(key) == wanted)
        .map(|(_, entry)| entry);
    if let Some(entry) = entry {
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .context("`auth` is not base64")?;
            let decoded = String::from_utf8(decoded).context("`auth` is not UTF-8")?;
            let Some((user, pass)) = decoded.split_once(':') else {
                bail!("`auth` for {registry} is not user:password");
            };
            return Ok(RegistryAuth::Basic(user.to_owned(), pass.to_owned()));
        }
        if let (Some(user), Some(pass)) = (&entry.username, &entry.password) {
            return Ok(RegistryAuth::Basic(user.clone(), pass.clone()));
        }
        if entry.identitytoken.is_some() {
            bail!("identity tokens are not supported; pass --username/--password");
        }
    }
    // Helpers keep secrets outside the file; running them is out of scope. Say so rather than
    // failing later with an opaque 401.
    let helper = config
        .cred_helpers
        .iter()
        .find(|(key, _)| normalize(key) == wanted)
        .map(|(_, helper)| helper)
        .or(config.creds_store.as_ref().filter(|_| entry.is_some()));
    if let Some(helper) = helper {
        bail!(
            "credentials for {registry} live in the docker-credential-{helper} helper, which \
             meshward does not run; pass --username/--password"
        );
    }
    Ok(RegistryAuth::Anonymous)
}

/// A registry key as the docker CLI writes it (`https://index.docker.io/v1/`, `host:port`,
/// `https://host`) reduced to a host[:port], with Docker Hub's aliases folded.
fn normalize(key: &str) -> String {
    let no_scheme = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = no_scheme.split('/').next().unwrap_or(no_scheme);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "index.docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    fn basic(auth: RegistryAuth) -> (String, String) {
        match auth {
            RegistryAuth::Basic(u, p) => (u, p),
            other => panic!("expected basic auth, got {other:?}"),
        }
    }

    #[test]
    fn auth_field_is_base64_user_colon_password() {
        // "alice:s3:cr3t" — the password may itself contain colons.
        let c = config(r#"{"auths":{"registry.example:5000":{"auth":"YWxpY2U6czM6Y3IzdA=="}}}"#);
        assert_eq!(
            basic(from_config(&c, "registry.example:5000").unwrap()),
            ("alice".into(), "s3:cr3t".into())
        );
    }

    #[test]
    fn keys_with_scheme_and_path_match_and_docker_hub_aliases_fold() {
        let c = config(
            r#"{"auths":{"https://index.docker.io/v1/":{"username":"bob","password":"pw"},
                         "https://ghcr.io":{"auth":"dTpw"}}}"#,
        );
        assert_eq!(basic(from_config(&c, "docker.io").unwrap()).0, "bob");
        assert_eq!(
            basic(from_config(&c, "ghcr.io").unwrap()),
            ("u".into(), "p".into())
        );
        assert!(matches!(
            from_config(&c, "quay.io").unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn helpers_are_reported_not_silently_ignored() {
        let c = config(r#"{"auths":{"ghcr.io":{}},"credsStore":"desktop"}"#);
        let err = from_config(&c, "ghcr.io").unwrap_err().to_string();
        assert!(err.contains("docker-credential-desktop"), "{err}");
        let c = config(r#"{"credHelpers":{"123.dkr.ecr.us-east-1.amazonaws.com":"ecr-login"}}"#);
        assert!(from_config(&c, "123.dkr.ecr.us-east-1.amazonaws.com").is_err());
        // A store with no entry for this registry: anonymous, as docker would be.
        let c = config(r#"{"credsStore":"desktop"}"#);
        assert!(matches!(
            from_config(&c, "localhost:5000").unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn flags_win_and_missing_file_is_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("config.json");
        assert!(matches!(
            resolve("r", None, None, Some(&missing)).unwrap(),
            RegistryAuth::Anonymous
        ));
        std::fs::write(&missing, r#"{"auths":{"r":{"auth":"YTpi"}}}"#).unwrap();
        assert_eq!(
            basic(resolve("r", None, None, Some(&missing)).unwrap()),
            ("a".into(), "b".into())
        );
        assert_eq!(
            basic(resolve("r", Some("x"), Some("y"), Some(&missing)).unwrap()),
            ("x".into(), "y".into())
        );
        assert!(resolve("r", Some("x"), None, None).is_err());
    }
}
