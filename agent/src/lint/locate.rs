//! Finds the line of a field inside one YAML document, such as `spec.ingress[1].from[0]`, so
//! that a finding points at the peer it is about. Block-style YAML is followed key by key and
//! item by item; when a step cannot be followed (flow style, JSON), the line of the deepest
//! step found is returned. Pure: works on the document's lines.

/// One step of a path inside a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub fn key(k: &str) -> Self {
        Self::Key(k.to_owned())
    }
}

/// `spec.ingress[0].ports` as segments.
pub fn parse_path(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Seg::key(key));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

/// A line of the document: its indentation, and its content with list markers counted as
/// indentation (`- a: 1` has its key at the column after `- `).
#[derive(Debug)]
struct Line<'a> {
    /// Column of the first `-` or character.
    indent: usize,
    /// Columns of the list markers at the start, outermost first.
    dashes: Vec<usize>,
    /// Column where the content after the markers starts.
    content_col: usize,
    content: &'a str,
}

fn parse(line: &str) -> Option<Line<'_>> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let indent = line.len() - trimmed.len();
    let mut col = indent;
    let mut rest = trimmed;
    let mut dashes = Vec::new();
    while rest == "-" || rest.starts_with("- ") {
        dashes.push(col);
        let after = rest[1..].trim_start();
        col += rest.len() - after.len();
        rest = after;
    }
    Some(Line {
        indent,
        dashes,
        content_col: col,
        content: rest,
    })
}

fn key_of(content: &str) -> Option<&str> {
    let (k, _) = content.split_once(':')?;
    let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
    (!k.is_empty() && !k.contains(['{', '[', ' '])).then_some(k)
}

/// The 0-based line, within `lines`, of the node at `path`, or of its deepest ancestor found.
pub fn locate(lines: &[&str], path: &[Seg]) -> usize {
    let parsed: Vec<Option<Line<'_>>> = lines.iter().map(|l| parse(l)).collect();
    let first = parsed.iter().position(Option::is_some).unwrap_or(0);
    // The current node: its lines [start, end), the column its children start at (a key's or
    // a list marker's), and the line it was found at.
    let (mut start, mut end, mut found) = (first, lines.len(), first);
    let mut col: Option<usize> = parsed.get(first).and_then(Option::as_ref).map(|l| l.indent);
    for seg in path {
        let Some(c) = col else { return found };
        let step = match seg {
            Seg::Key(k) => find_key(&parsed, start, end, c, k),
            Seg::Index(i) => find_item(&parsed, start, end, c, *i),
        };
        let Some((line, child_start, child_end, child_col)) = step else {
            return found;
        };
        found = line;
        start = child_start;
        end = child_end;
        col = child_col;
    }
    found
}

type Step = (usize, usize, usize, Option<usize>);

/// Where the content of a line is at column `c` (after any list markers before `c`).
fn content_at<'a>(l: &Line<'a>, c: usize) -> Option<&'a str> {
    if l.content_col == c {
        return Some(l.content);
    }
    None
}

fn find_key(
    parsed: &[Option<Line<'_>>],
    start: usize,
    end: usize,
    c: usize,
    k: &str,
) -> Option<Step> {
    for i in start..end {
        let Some(l) = &parsed[i] else { continue };
        if l.indent < c && l.content_col < c {
            return None;
        }
        if content_at(l, c).and_then(key_of) == Some(k) {
            let child_end = block_end(parsed, i + 1, end, c);
            let child_col = parsed[i + 1..child_end]
                .iter()
                .flatten()
                .next()
                .map(|n| n.indent);
            return Some((i, i + 1, child_end, child_col));
        }
    }
    None
}

/// The end of a block whose header is at column `c`: the first line at or left of `c`, list
/// markers at `c` excepted when they are the block's own items.
fn block_end(parsed: &[Option<Line<'_>>], from: usize, end: usize, c: usize) -> usize {
    let mut items_col = None;
    for (i, l) in parsed.iter().enumerate().take(end).skip(from) {
        let Some(l) = l else { continue };
        if items_col.is_none() {
            items_col = Some(l.indent);
        }
        // A list whose items sit at the key's column still belongs to the key.
        let own_item = l.indent == c && !l.dashes.is_empty() && items_col == Some(c);
        if l.indent <= c && !own_item {
            return i;
        }
    }
    end
}

fn find_item(
    parsed: &[Option<Line<'_>>],
    start: usize,
    end: usize,
    c: usize,
    n: usize,
) -> Option<Step> {
    let mut seen = 0;
    for i in start..end {
        let Some(l) = &parsed[i] else { continue };
        if l.indent < c {
            return None;
        }
        if l.indent == c && l.dashes.first() == Some(&c) {
            if seen == n {
                // The item's content starts after its marker; nested markers count as its own.
                let inner = l.dashes.get(1).copied().unwrap_or(l.content_col);
                let mut item_end = end;
                for (j, m) in parsed.iter().enumerate().take(end).skip(i + 1) {
                    let Some(m) = m else { continue };
                    if m.indent <= c {
                        item_end = j;
                        break;
                    }
                }
                // The item's lines are [i, item_end); its children start at `inner`.
                return Some((i, i, item_end, Some(inner)));
            }
            seen += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: a}
    - namespaceSelector: {}
    ports:
    - port: 80
  - from:
      - ipBlock:
          cidr: 0.0.0.0/0
  egress:
    - to:
        - podSelector: {}
      ports: [{port: 53, protocol: UDP}]
";

    fn at(path: &[Seg]) -> usize {
        let lines: Vec<&str> = DOC.lines().collect();
        locate(&lines, path) + 1
    }

    fn p(s: &str) -> Vec<Seg> {
        s.split('.')
            .flat_map(|part| {
                let (k, idx) = match part.split_once('[') {
                    Some((k, i)) => (k, Some(i.trim_end_matches(']').parse().unwrap())),
                    None => (part, None),
                };
                let mut v = vec![Seg::key(k)];
                v.extend(idx.map(Seg::Index));
                v
            })
            .collect()
    }

    #[test]
    fn locates_keys_items_and_nested_items() {
        assert_eq!(at(&p("spec")), 5);
        assert_eq!(at(&p("spec.ingress")), 7);
        assert_eq!(at(&p("spec.ingress[0]")), 8);
        assert_eq!(at(&p("spec.ingress[0].from[0]")), 9);
        assert_eq!(at(&p("spec.ingress[0].from[1]")), 11);
        assert_eq!(at(&p("spec.ingress[0].ports")), 12);
        assert_eq!(at(&p("spec.ingress[1]")), 14);
        assert_eq!(at(&p("spec.ingress[1].from[0]")), 15);
        assert_eq!(at(&p("spec.egress[0].to[0]")), 19);
        assert_eq!(at(&p("spec.egress[0].ports")), 20);
    }

    #[test]
    fn falls_back_to_the_deepest_step_found() {
        assert_eq!(at(&p("spec.egress[0].ports[0]")), 20);
        assert_eq!(at(&p("spec.ingress[5]")), 7);
        assert_eq!(at(&p("nothing")), 1);
    }
}
