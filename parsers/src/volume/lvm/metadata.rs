//! LVM2's text configuration format, as written into metadata areas:
//! `name { ... }` sections, `key = value` settings whose values are strings,
//! numbers or flat arrays of those, and `#` comments.

/// Sections nest only a few levels in real metadata (VG, LV, segment).
const MAX_DEPTH: usize = 16;

/// A setting's value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
}

/// One entry of a section.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Item {
    Value(Value),
    Section(Section),
}

/// A section: its entries in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Section {
    pub items: Vec<(String, Item)>,
}

impl Section {
    /// The value of setting `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.items.iter().find_map(|(k, i)| match i {
            Item::Value(v) if k == key => Some(v),
            _ => None,
        })
    }

    /// Subsection `key`.
    pub fn section(&self, key: &str) -> Option<&Section> {
        self.sections().find_map(|(k, s)| (k == key).then_some(s))
    }

    /// Every subsection, in order.
    pub fn sections(&self) -> impl Iterator<Item = (&str, &Section)> {
        self.items.iter().filter_map(|(k, i)| match i {
            Item::Section(s) => Some((k.as_str(), s)),
            Item::Value(_) => None,
        })
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.value(key)? {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        match self.value(key)? {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The strings of array `key` (`status = ["READ", "VISIBLE"]`).
    pub fn flags(&self, key: &str) -> Vec<&str> {
        match self.value(key) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| match v {
                    Value::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Parses a whole metadata text into its top-level section.
pub(super) fn parse(text: &[u8]) -> Result<Section, String> {
    let mut p = Parser { s: text, pos: 0 };
    let top = p.section_body(0)?;
    p.skip_blank();
    match p.peek() {
        None => Ok(top),
        Some(c) => Err(format!("unexpected '{}' at byte {}", c as char, p.pos)),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips whitespace and comments.
    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while self.peek().is_some_and(|c| c != b'\n') {
                    self.pos += 1;
                }
            } else if c.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.pos))
    }

    /// Entries up to a closing `}` (depth > 0) or the end of text (depth 0).
    fn section_body(&mut self, depth: usize) -> Result<Section, String> {
        if depth > MAX_DEPTH {
            return self.err("sections nested too deeply");
        }
        let mut sec = Section::default();
        loop {
            self.skip_blank();
            match self.peek() {
                None if depth == 0 => return Ok(sec),
                None => return self.err("unterminated section"),
                Some(b'}') if depth > 0 => {
                    self.pos += 1;
                    return Ok(sec);
                }
                Some(_) => {}
            }
            let key = self.ident()?;
            self.skip_blank();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    let sub = self.section_body(depth + 1)?;
                    sec.items.push((key, Item::Section(sub)));
                }
                Some(b'=') => {
                    self.pos += 1;
                    self.skip_blank();
                    let v = self.value(true)?;
                    sec.items.push((key, Item::Value(v)));
                }
                _ => return self.err("expected '{' or '='"),
            }
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"_-+.".contains(&c))
        {
            self.pos += 1;
        }
        if start == self.pos {
            return self.err("expected a name");
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// A string, number or (if `array_ok`) flat array.
    fn value(&mut self, array_ok: bool) -> Result<Value, String> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') if array_ok => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_blank();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    if !items.is_empty() {
                        if self.peek() != Some(b',') {
                            return self.err("expected ',' or ']'");
                        }
                        self.pos += 1;
                        self.skip_blank();
                    }
                    items.push(self.value(false)?);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            _ => self.err("expected a value"),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                // LVM escapes '"' and '\' with a backslash.
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(c) => out.push(c),
                        None => return self.err("unterminated string"),
                    }
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == b'.') {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        if text.contains('.') {
            text.parse()
                .map(Value::Float)
                .or_else(|_| self.err("bad number"))
        } else {
            text.parse()
                .map(Value::Int)
                .or_else(|_| self.err("bad number"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_values_arrays_comments(
    ) -> std::result::Result<(), Box<dyn std::error::Error>> {
        let text = br#"# comment
vg-1 {
    id = "abc" # trailing
    seqno = 7
    status = ["READ", "WRITE"]
    lvs {
        lv { stripes = [
            "pv0", 0,
            "pv1", 12
        ] }
    }
    weird = "a\"b\\c"
    f = 1.5
    neg = -3
}
contents = "Text Format Volume Group"
"#;
        let top = parse(text)?;
        let vg = top.section("vg-1").ok_or("no vg-1")?;
        assert_eq!(vg.str("id"), Some("abc"));
        assert_eq!(vg.int("seqno"), Some(7));
        assert_eq!(vg.flags("status"), ["READ", "WRITE"]);
        assert_eq!(vg.str("weird"), Some("a\"b\\c"));
        assert_eq!(vg.value("f"), Some(&Value::Float(1.5)));
        assert_eq!(vg.int("neg"), Some(-3));
        let lv = vg
            .section("lvs")
            .and_then(|l| l.section("lv"))
            .ok_or("no lv")?;
        assert_eq!(
            lv.value("stripes"),
            Some(&Value::Array(vec![
                Value::Str("pv0".into()),
                Value::Int(0),
                Value::Str("pv1".into()),
                Value::Int(12)
            ]))
        );
        assert_eq!(top.str("contents"), Some("Text Format Volume Group"));
        Ok(())
    }

    #[test]
    fn refuses_bad_text_and_deep_nesting() {
        for bad in [
            &b"a {"[..],
            b"a = ",
            b"a = [1, ",
            b"a = \"x",
            b"}",
            b"a b",
            b"a = [[1]]",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "a {".repeat(10_000);
        assert!(parse(deep.as_bytes()).is_err());
    }
}
