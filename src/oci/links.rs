//! Symlinks followed through a listing of a tree, not the disk: the build
//! context's entries (COPY sources) and an image's files (`kiln rebase`'s
//! checks). Every component is followed, `..` stops at the root, absolute
//! targets start again from the root, and a chain of more than 40 links
//! (Linux's limit) resolves to nothing. For trees on disk, see
//! [`super::inroot`], which has the kernel do it.

use std::collections::VecDeque;

/// What a listing says of one path: missing, a link to a target, or
/// something else (a file, a directory).
pub enum Node<'a> {
    Missing,
    Link(&'a str),
    Other,
}

/// Resolves `path` (relative to the root; `/`-separated) in the tree that
/// `node` describes by joined path (`"a/b"`, no leading slash). Returns
/// the path it lands on, or `None` when a component is missing or links
/// loop.
pub fn resolve<'a>(path: &str, node: impl Fn(&str) -> Node<'a>) -> Option<String> {
    let mut todo: VecDeque<String> = components(path).collect();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        cur.push(c);
        match node(&cur.join("/")) {
            Node::Missing => return None,
            Node::Other => {}
            Node::Link(target) => {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                cur.pop();
                if target.starts_with('/') {
                    cur.clear();
                }
                let rest = std::mem::take(&mut todo);
                todo = components(target).chain(rest).collect();
            }
        }
    }
    Some(cur.join("/"))
}

fn components(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tree() -> BTreeMap<&'static str, Option<&'static str>> {
        BTreeMap::from([
            ("usr", None),
            ("usr/lib", None),
            ("usr/lib/libz.so.1", None),
            ("lib", Some("usr/lib")),
            ("abs", Some("/usr/lib/libz.so.1")),
            ("up", Some("../../../usr")),
            ("loop", Some("loop")),
        ])
    }

    fn resolved(path: &str) -> Option<String> {
        let t = tree();
        resolve(path, |p| match t.get(p) {
            None => Node::Missing,
            Some(Some(target)) => Node::Link(target),
            Some(None) => Node::Other,
        })
    }

    #[test]
    fn links_are_followed_inside_the_tree() {
        assert_eq!(resolved("lib/libz.so.1").as_deref(), Some("usr/lib/libz.so.1"));
        assert_eq!(resolved("/abs").as_deref(), Some("usr/lib/libz.so.1"));
        assert_eq!(resolved("./usr/../lib").as_deref(), Some("usr/lib"));
        // `..` past the root stays at the root.
        assert_eq!(resolved("up/lib").as_deref(), Some("usr/lib"));
        assert_eq!(resolved("lib/missing"), None);
        assert_eq!(resolved("loop"), None);
    }
}
