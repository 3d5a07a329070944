//! `WWW-Authenticate` challenges and bearer tokens.
//!
//! A registry answers 401 with `Basic realm=…` or
//! `Bearer realm=…,service=…,scope=…`. For bearer, kiln asks the realm for a
//! token (GET with `service` and one `scope` per scope, basic auth when it
//! has credentials, or a POST with `grant_type=refresh_token` for identity
//! tokens), then keeps the token with the scopes it was asked for until
//! `expires_in` (default 60 s) runs out. A request needing a scope the
//! current token lacks asks for a new token covering the union of scopes,
//! so one token serves a whole push (target push+pull, mount sources pull).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// One parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value (`Scheme k="v", k2=v2`). Returns
/// `None` for schemes kiln does not speak.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2` with backslash escapes inside quotes; commas inside
/// quotes (multi-action scopes) are kept.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        let key = key.trim().to_string();
        if chars.peek() != Some(&'=') {
            if chars.peek().is_none() {
                break;
            }
            continue;
        }
        chars.next();
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    out
}

/// The scope string for a repository and actions: `repository:ns/app:pull,push`.
pub fn repo_scope(repository: &str, actions: &str) -> String {
    format!("repository:{repository}:{actions}")
}

/// Splits a challenge's `scope` (space-separated) into scopes.
pub fn split_scopes(scope: &str) -> impl Iterator<Item = String> + '_ {
    scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// True when `have` grants everything `want` asks for. A scope
/// `repository:x:pull,push` covers `repository:x:pull`.
pub fn covers(have: &BTreeSet<String>, want: &BTreeSet<String>) -> bool {
    want.iter().all(|w| {
        let Some((res, actions)) = w.rsplit_once(':') else {
            return have.contains(w);
        };
        actions.split(',').all(|a| {
            have.iter().any(|h| {
                h.rsplit_once(':')
                    .is_some_and(|(hr, ha)| hr == res && ha.split(',').any(|x| x == a || x == "*"))
            })
        })
    })
}

/// Merges scopes per resource: `repository:x:pull` + `repository:x:push`
/// → `repository:x:pull,push`. Keeps the request URL short and lets the
/// token server see one scope per repository, as docker sends them.
pub fn merge_scopes(scopes: &BTreeSet<String>) -> BTreeSet<String> {
    let mut by_resource: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    let mut plain = BTreeSet::new();
    for s in scopes {
        match s.rsplit_once(':') {
            Some((res, actions)) if res.contains(':') => {
                by_resource.entry(res.to_string()).or_default().extend(
                    actions
                        .split(',')
                        .filter(|a| !a.is_empty())
                        .map(str::to_string),
                );
            }
            _ => {
                plain.insert(s.clone());
            }
        }
    }
    for (res, actions) in by_resource {
        plain.insert(format!(
            "{res}:{}",
            actions.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    plain
}

/// A bearer token and what it was issued for.
#[derive(Clone)]
pub struct Token {
    pub value: String,
    pub scopes: BTreeSet<String>,
    pub expires: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<hidden>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl Token {
    /// Still valid for a while (10 s margin so a request does not carry a
    /// token that expires on the way).
    pub fn fresh(&self) -> bool {
        Instant::now() + Duration::from_secs(10) < self.expires
    }
}

/// The token endpoint's JSON answer.
#[derive(Debug, serde::Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl TokenResponse {
    /// The token (either field) and its lifetime (60 s when unsaid, the
    /// protocol's default).
    pub fn into_token(self, scopes: BTreeSet<String>) -> Option<Token> {
        let value = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let secs = self.expires_in.filter(|s| *s > 0).unwrap_or(60);
        Some(Token {
            value,
            scopes,
            expires: Instant::now() + Duration::from_secs(secs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:samalba/my-app:pull,push".into()),
            })
        );
        let c = parse_challenge(r#"bearer realm=http://x/t, service="a \"q\" b""#);
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: Some("a \"q\" b".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn scope_coverage_and_merging() {
        let have: BTreeSet<String> = ["repository:a:pull,push".to_string()].into();
        assert!(covers(&have, &["repository:a:pull".to_string()].into()));
        assert!(covers(
            &have,
            &["repository:a:push,pull".to_string()].into()
        ));
        assert!(!covers(&have, &["repository:b:pull".to_string()].into()));
        assert!(!covers(&have, &["repository:a:delete".to_string()].into()));
        let merged = merge_scopes(
            &[
                "repository:a:pull".to_string(),
                "repository:a:push".to_string(),
                "repository:b:pull".to_string(),
                "registry:catalog:*".to_string(),
            ]
            .into(),
        );
        assert_eq!(
            merged.into_iter().collect::<Vec<_>>(),
            vec![
                "registry:catalog:*",
                "repository:a:pull,push",
                "repository:b:pull"
            ]
        );
    }

    #[test]
    fn token_defaults_to_sixty_seconds() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        let t = t.into_token(BTreeSet::new()).unwrap();
        let left = t.expires - Instant::now();
        assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60));
        assert!(!format!("{t:?}").contains("\"x\""));
        let t: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(t.into_token(BTreeSet::new()).is_none());
    }
}
