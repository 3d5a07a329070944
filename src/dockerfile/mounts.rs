//! `RUN --mount=…` specs (BuildKit's CSV syntax) after variable expansion.

use crate::context::ignore::clean;
use crate::graph::{CopyFrom, Mount, Sharing};

/// A parsed mount, with a `from=` still unresolved (stage name or image).
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub mount: Mount,
    /// The raw `from=` value, resolved by the caller.
    pub from: Option<String>,
}

/// Splits a CSV line as Go's `encoding/csv` does for one record.
pub fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            _ => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err(format!("unterminated quote in {s:?}"));
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(o) => Err(format!(
            "invalid value for {key}: {o:?} (expected true or false)"
        )),
    }
}

fn parse_u32(key: &str, v: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(v, radix).map_err(|_| format!("invalid value for {key}: {v:?}"))
}

/// Bytes from `64m`, `1g`, `4096` (docker `units.RAMInBytes`).
fn parse_size(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let t = lower.trim_end_matches('b');
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {v:?} (use e.g. 64m or 1g)"))?;
    Ok((n * mult as f64) as u64)
}

/// Parses one `--mount` value. `workdir` makes relative targets absolute;
/// `ssh_count` numbers default ssh targets; `expand` expands each value.
pub fn parse_mount(
    spec: &str,
    workdir: &str,
    ssh_count: usize,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<MountSpec, String> {
    let mut typ = "bind".to_string();
    let mut fields: Vec<(String, Option<String>)> = Vec::new();
    for f in split_csv(spec)? {
        let f = f.trim();
        if f.is_empty() {
            continue;
        }
        let (k, v) = match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(expand(v.trim())?)),
            None => (f.to_ascii_lowercase(), None),
        };
        if k == "type" {
            typ = v.clone().unwrap_or_default().to_ascii_lowercase();
        } else {
            fields.push((k, v));
        }
    }
    let mut target: Option<String> = None;
    let mut source: Option<String> = None;
    let mut from: Option<String> = None;
    let mut readonly: Option<bool> = None;
    let mut id: Option<String> = None;
    let mut sharing = Sharing::Shared;
    let mut mode: Option<u32> = None;
    let (mut uid, mut gid) = (0u32, 0u32);
    let mut size: Option<u64> = None;
    let mut required = false;
    let mut env: Option<String> = None;
    for (k, v) in fields {
        let val = || {
            v.clone()
                .ok_or_else(|| format!("mount option {k} needs a value ({k}=…)"))
        };
        match k.as_str() {
            "target" | "dst" | "destination" => target = Some(val()?),
            "source" | "src" => source = Some(val()?),
            "from" => from = Some(val()?),
            "readonly" | "ro" => readonly = Some(parse_bool(&k, v.as_deref())?),
            "readwrite" | "rw" => readonly = Some(!parse_bool(&k, v.as_deref())?),
            "id" => id = Some(val()?),
            "sharing" => {
                sharing = match val()?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    o => {
                        return Err(format!(
                            "unsupported sharing value {o:?} (shared, private or locked)"
                        ));
                    }
                }
            }
            "mode" => mode = Some(parse_u32("mode", &val()?, 8)?),
            "uid" => uid = parse_u32("uid", &val()?, 10)?,
            "gid" => gid = parse_u32("gid", &val()?, 10)?,
            "size" => size = Some(parse_size(&val()?)?),
            "required" => required = parse_bool(&k, v.as_deref())?,
            "env" => env = Some(val()?),
            _ => return Err(format!("unexpected key {k:?} in mount {spec:?}")),
        }
    }
    let abs = |t: String| -> String {
        if t.starts_with('/') {
            clean(&t)
        } else {
            clean(&format!(
                "{}/{t}",
                if workdir.is_empty() { "/" } else { workdir }
            ))
        }
    };
    let need_target = |t: Option<String>| {
        t.map(abs)
            .ok_or_else(|| format!("mount type={typ} requires a target (target=/path)"))
    };
    let mount = match typ.as_str() {
        "bind" => Mount::Bind {
            target: need_target(target)?,
            from: CopyFrom::Context,
            source: source.unwrap_or_else(|| "/".into()),
            readwrite: readonly == Some(false),
        },
        "cache" => {
            let target = need_target(target)?;
            Mount::Cache {
                id: id.unwrap_or_else(|| target.clone()),
                target,
                sharing,
                from: None,
                source: source.unwrap_or_else(|| "/".into()),
                readonly: readonly.unwrap_or(false),
                mode: mode.unwrap_or(0o755),
                uid,
                gid,
            }
        }
        "tmpfs" => Mount::Tmpfs {
            target: need_target(target)?,
            size,
        },
        "secret" => {
            let target = target.map(abs);
            let id = match (id, &target) {
                (Some(i), _) => i,
                (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                (None, None) => return Err("mount type=secret needs id= or target=".into()),
            };
            let target = match (target, &env) {
                (Some(t), _) => Some(t),
                (None, Some(_)) => None,
                (None, None) => Some(format!("/run/secrets/{id}")),
            };
            Mount::Secret {
                id,
                target,
                env,
                required,
                mode: mode.unwrap_or(0o400),
                uid,
                gid,
            }
        }
        "ssh" => Mount::Ssh {
            id: id.unwrap_or_else(|| "default".into()),
            target: target
                .map(abs)
                .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}")),
            required,
            mode: mode.unwrap_or(0o600),
            uid,
            gid,
        },
        o => {
            return Err(format!(
                "unsupported mount type {o:?} (bind, cache, tmpfs, secret or ssh)"
            ));
        }
    };
    Ok(MountSpec { mount, from })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(s: &str) -> Result<MountSpec, String> {
        parse_mount(s, "/app", 0, &|v: &str| Ok(v.replace("$V", "val")))
    }

    #[test]
    fn csv() {
        assert_eq!(split_csv("a,\"b,c\",d").unwrap(), vec!["a", "b,c", "d"]);
        assert!(split_csv("\"x").is_err());
    }

    #[test]
    fn kinds_and_defaults() {
        let m = pm("type=cache,target=/root/.cache,sharing=locked")
            .unwrap()
            .mount;
        assert_eq!(
            m,
            Mount::Cache {
                target: "/root/.cache".into(),
                id: "/root/.cache".into(),
                sharing: Sharing::Locked,
                from: None,
                source: "/".into(),
                readonly: false,
                mode: 0o755,
                uid: 0,
                gid: 0
            }
        );
        let m = pm("target=src,source=lib,rw").unwrap();
        assert_eq!(
            m.mount,
            Mount::Bind {
                target: "/app/src".into(),
                from: CopyFrom::Context,
                source: "lib".into(),
                readwrite: true
            }
        );
        let m = pm("type=bind,from=build,src=/out,target=/in").unwrap();
        assert_eq!(m.from.as_deref(), Some("build"));
        let m = pm("type=secret,id=tok").unwrap().mount;
        assert!(
            matches!(m, Mount::Secret { ref id, target: Some(ref t), mode: 0o400, .. } if id == "tok" && t == "/run/secrets/tok")
        );
        let m = pm("type=secret,target=/etc/key,required,mode=0440,uid=5")
            .unwrap()
            .mount;
        assert!(
            matches!(m, Mount::Secret { ref id, required: true, mode: 0o440, uid: 5, .. } if id == "key")
        );
        let m = pm("type=secret,id=t,env=TOKEN").unwrap().mount;
        assert!(matches!(m, Mount::Secret { target: None, env: Some(ref e), .. } if e == "TOKEN"));
        let m = pm("type=tmpfs,target=/tmp,size=64m").unwrap().mount;
        assert_eq!(
            m,
            Mount::Tmpfs {
                target: "/tmp".into(),
                size: Some(64 << 20)
            }
        );
        let m = pm("type=ssh").unwrap().mount;
        assert!(
            matches!(m, Mount::Ssh { ref id, ref target, .. } if id == "default" && target == "/run/buildkit/ssh_agent.0")
        );
        let m = pm("type=cache,target=/c,id=$V").unwrap().mount;
        assert!(matches!(m, Mount::Cache { ref id, .. } if id == "val"));
    }

    #[test]
    fn errors() {
        assert!(pm("type=cache").unwrap_err().contains("requires a target"));
        assert!(
            pm("type=nfs,target=/x")
                .unwrap_err()
                .contains("unsupported mount type")
        );
        assert!(
            pm("type=cache,target=/x,bogus=1")
                .unwrap_err()
                .contains("unexpected key")
        );
        assert!(
            pm("type=cache,target=/x,sharing=all")
                .unwrap_err()
                .contains("sharing")
        );
        assert!(
            pm("type=cache,target=/x,mode=9")
                .unwrap_err()
                .contains("mode")
        );
        assert!(pm("type=secret").unwrap_err().contains("id="));
    }
}
