//! dig's answers, parsed: status, flags, sections.

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// The parts of a dig reply the tests look at.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answers: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub msg_size: usize,
    pub raw: String,
}

impl Dig {
    /// Parses `dig` output (default format, with comments).
    pub fn parse(out: &str) -> Dig {
        let mut d = Dig {
            raw: out.to_string(),
            ..Default::default()
        };
        let mut section = "";
        for line in out.lines() {
            if let Some(rest) = line.split("status: ").nth(1) {
                d.status = rest.split(',').next().unwrap_or("").to_string();
            }
            if let Some(rest) = line.strip_prefix(";; flags: ") {
                let flags = rest.split(';').next().unwrap_or("");
                d.flags = flags.split_whitespace().map(str::to_string).collect();
            }
            if let Some(rest) = line.strip_prefix(";; MSG SIZE  rcvd: ") {
                d.msg_size = rest.trim().parse().unwrap_or(0);
            }
            if line.starts_with(";; ANSWER SECTION") {
                section = "answer";
                continue;
            }
            if line.starts_with(";; AUTHORITY SECTION") {
                section = "authority";
                continue;
            }
            if line.starts_with(";;") || line.trim().is_empty() {
                if line.trim().is_empty() {
                    section = "";
                }
                continue;
            }
            if line.starts_with(';') {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                let rr = Rr {
                    name: f[0].to_string(),
                    ttl: f[1].parse().unwrap_or(0),
                    rtype: f[3].to_string(),
                    data: f[4..].join(" "),
                };
                match section {
                    "answer" => d.answers.push(rr),
                    "authority" => d.authority.push(rr),
                    _ => {}
                }
            }
        }
        d
    }

    /// The answers' data, sorted (for set comparisons).
    pub fn data(&self) -> Vec<String> {
        let mut v: Vec<String> = self.answers.iter().map(|r| r.data.clone()).collect();
        v.sort();
        v
    }

    /// The answers' data in the order received.
    pub fn ordered(&self) -> Vec<String> {
        self.answers.iter().map(|r| r.data.clone()).collect()
    }

    /// Whether the reply's header has flag `f` (qr, aa, rd, ra, tc, ...).
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
}
