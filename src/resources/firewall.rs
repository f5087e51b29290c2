//! `firewall`: declarative IPv4 filter rules for the host (INPUT) and for container traffic
//! (Docker's DOCKER-USER hook in the FORWARD path), kept in chains SLICE owns and nothing else.
//!
//! iptables backend: chains `SLICE-INPUT` and `SLICE-DOCKER-USER` in the filter table, hooked by
//! one jump rule each at the top of INPUT and DOCKER-USER. They are observed with one read-only
//! `iptables-save -t filter` (shared by every firewall task of a host), compared rule by rule as
//! normalised specs, and loaded atomically with `iptables-restore --noflush`: a restore file that
//! declares a chain flushes that chain only, so Docker's chains (DOCKER, DOCKER-ISOLATION-*, the
//! rest of DOCKER-USER) are never rewritten.
//!
//! nftables backend: a table `inet slice` of its own with base chains at the input and forward
//! hooks, replaced atomically by one `nft -f` script (`flush table inet slice` + definitions).
//!
//! Both write the same rules to a file under /etc/slice and enable `slice-firewall.service`,
//! which loads them again at boot (before the network comes up).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::Result;
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::line::{at, content_change};
use crate::transport::{Attrs, Probe, Transport};
use crate::yaml::{Node, Value};

/// The chain SLICE fills for the host's own traffic, hooked from INPUT.
const INPUT_CHAIN: &str = "SLICE-INPUT";
/// The chain SLICE fills for container traffic, hooked from DOCKER-USER.
const DOCKER_CHAIN: &str = "SLICE-DOCKER-USER";
const IPT_RULES: &str = "/etc/slice/firewall.rules";
const NFT_RULES: &str = "/etc/slice/firewall.nft";
const UNIT: &str = "/etc/systemd/system/slice-firewall.service";
/// `WantedBy=sysinit.target`: the link `systemctl enable` makes.
const UNIT_LINK: &str = "/etc/systemd/system/sysinit.target.wants/slice-firewall.service";
/// Heredoc delimiter for rule text sent to the host; comments cannot contain it (see `comment`).
const EOF: &str = "SLICE_FIREWALL_EOF";
/// iptables' multiport match takes at most 15 ports (a range counts as two).
const MULTIPORT_MAX: usize = 15;

/// One read-only command for every firewall task of a host: which tools exist, iptables-save's
/// filter table and SLICE's nftables table. Sections start with `#slice-` marker lines.
const PROBE: &str = "if command -v iptables >/dev/null 2>&1; then echo '#slice-has-iptables'; fi; \
if command -v iptables-save >/dev/null 2>&1; then \
if out=$(iptables-save -t filter 2>&1); then printf '#slice-iptables\\n%s\\n' \"$out\"; \
else printf '#slice-iptables-failed\\n%s\\n' \"$out\"; fi; fi; \
if command -v nft >/dev/null 2>&1; then \
if out=$(nft list table inet slice 2>&1); then printf '#slice-nft\\n%s\\n' \"$out\"; \
else case \"$out\" in *'No such file'*) echo '#slice-nft-absent';; \
*) printf '#slice-nft-failed\\n%s\\n' \"$out\";; esac; fi; fi; true";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Auto,
    Iptables,
    Nftables,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
    Any,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Any => "any",
        }
    }
}

/// What a matching packet gets.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Accept,
    Drop,
    Reject,
    /// Back to the calling chain: in DOCKER-USER, "not blocked by SLICE, Docker decides".
    Return,
}

/// An IPv4 network, its address masked to the prefix (as iptables stores it).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Net {
    fn parse(s: &str) -> Option<Net> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok().filter(|p| *p <= 32)?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = a.parse().ok()?;
        let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        Some(Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix: p,
        })
    }

    /// As iptables-save prints it: always with a prefix.
    fn ipt(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }

    /// As nft prints it: a single address without `/32`.
    fn nft(&self) -> String {
        if self.prefix == 32 {
            self.addr.to_string()
        } else {
            self.ipt()
        }
    }
}

/// One rule of a chain, in terms both backends can render.
#[derive(Clone, Debug, PartialEq)]
struct Spec {
    src: Option<Net>,
    dst: Option<Net>,
    iif: Option<String>,
    oif: Option<String>,
    proto: Proto,
    /// Inclusive ranges; empty means any port.
    ports: Vec<(u16, u16)>,
    /// Only packets of established or related connections.
    established: bool,
    verdict: Verdict,
    comment: Option<String>,
}

impl Spec {
    fn verdict(verdict: Verdict) -> Spec {
        Spec {
            src: None,
            dst: None,
            iif: None,
            oif: None,
            proto: Proto::Any,
            ports: Vec::new(),
            established: false,
            verdict,
            comment: None,
        }
    }

    /// The rule as `iptables-save` prints it after `-A CHAIN` (before normalising).
    fn iptables(&self) -> String {
        let mut s = String::new();
        if let Some(n) = &self.src {
            let _ = write!(s, " -s {}", n.ipt());
        }
        if let Some(n) = &self.dst {
            let _ = write!(s, " -d {}", n.ipt());
        }
        if let Some(i) = &self.iif {
            let _ = write!(s, " -i {i}");
        }
        if let Some(i) = &self.oif {
            let _ = write!(s, " -o {i}");
        }
        if self.proto != Proto::Any {
            let _ = write!(s, " -p {}", self.proto.name());
        }
        match self.ports.as_slice() {
            [] => {}
            [one] => {
                let _ = write!(s, " -m {} --dport {}", self.proto.name(), range(*one, ":"));
            }
            many => {
                let list: Vec<String> = many.iter().map(|r| range(*r, ":")).collect();
                let _ = write!(s, " -m multiport --dports {}", list.join(","));
            }
        }
        if self.established {
            s.push_str(" -m conntrack --ctstate RELATED,ESTABLISHED");
        }
        if let Some(c) = &self.comment {
            let _ = write!(s, " -m comment --comment \"{c}\"");
        }
        s.push_str(match self.verdict {
            Verdict::Accept => " -j ACCEPT",
            Verdict::Drop => " -j DROP",
            Verdict::Reject => " -j REJECT --reject-with icmp-port-unreachable",
            Verdict::Return => " -j RETURN",
        });
        normalise(s.trim_start())
    }

    /// The rule as `nft list table` prints it.
    fn nft(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(i) = &self.iif {
            parts.push(format!("iifname \"{i}\""));
        }
        if let Some(i) = &self.oif {
            parts.push(format!("oifname \"{i}\""));
        }
        if let Some(n) = &self.src {
            parts.push(format!("ip saddr {}", n.nft()));
        }
        if let Some(n) = &self.dst {
            parts.push(format!("ip daddr {}", n.nft()));
        }
        match (self.proto, self.ports.as_slice()) {
            (Proto::Any, _) => {}
            (p, []) => parts.push(format!("meta l4proto {}", p.name())),
            (p, [one]) => parts.push(format!("{} dport {}", p.name(), range(*one, "-"))),
            (p, many) => {
                let list: Vec<String> = many.iter().map(|r| range(*r, "-")).collect();
                parts.push(format!("{} dport {{ {} }}", p.name(), list.join(", ")));
            }
        }
        if self.established {
            parts.push("ct state established,related".into());
        }
        // In a base chain of SLICE's own table, accept ends only SLICE's chain: the packet
        // still meets Docker's and others' chains at the same hook, as RETURN does for iptables.
        parts.push(
            match self.verdict {
                Verdict::Accept | Verdict::Return => "accept",
                Verdict::Drop => "drop",
                Verdict::Reject => "reject",
            }
            .into(),
        );
        if let Some(c) = &self.comment {
            parts.push(format!("comment \"{c}\""));
        }
        parts.join(" ")
    }
}

fn range((lo, hi): (u16, u16), sep: &str) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}{sep}{hi}")
    }
}

/// An iptables rule spec as comparable text: tokens re-quoted the same way, and the implicit
/// `-m tcp`/`-m udp`/`-m icmp` that iptables-save adds after `-p` dropped.
fn normalise(spec: &str) -> String {
    let tokens = shlex::split(spec).unwrap_or_else(|| {
        // Unbalanced quotes cannot come from iptables-save; keep the text as it is.
        spec.split_whitespace().map(str::to_string).collect()
    });
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let implicit = tokens[i] == "-m"
            && tokens
                .get(i + 1)
                .is_some_and(|m| matches!(m.as_str(), "tcp" | "udp" | "icmp"));
        if implicit {
            i += 2;
            continue;
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    // Quoted as iptables-save quotes: only what holds blanks or quotes (comments).
    let quoted: Vec<String> = out
        .iter()
        .map(|t| {
            if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("\"{}\"", t.replace('"', "\\\""))
            } else {
                t.clone()
            }
        })
        .collect();
    quoted.join(" ")
}

/// A rule as written in the playbook, before expanding lists of addresses.
#[derive(Clone, Debug)]
struct Rule {
    verdict: Verdict,
    proto: Proto,
    ports: Vec<(u16, u16)>,
    sources: Vec<Net>,
    dests: Vec<Net>,
    iif: Option<String>,
    oif: Option<String>,
    comment: Option<String>,
}

impl Rule {
    /// One spec per source and destination pair (iptables matches one network per rule).
    fn specs(&self) -> Vec<Spec> {
        let srcs: Vec<Option<Net>> = opt_list(&self.sources);
        let dsts: Vec<Option<Net>> = opt_list(&self.dests);
        let mut out = Vec::new();
        for s in &srcs {
            for d in &dsts {
                out.push(Spec {
                    src: *s,
                    dst: *d,
                    iif: self.iif.clone(),
                    oif: self.oif.clone(),
                    proto: self.proto,
                    ports: self.ports.clone(),
                    established: false,
                    verdict: self.verdict,
                    comment: self.comment.clone(),
                });
            }
        }
        out
    }
}

fn opt_list(nets: &[Net]) -> Vec<Option<Net>> {
    if nets.is_empty() {
        vec![None]
    } else {
        nets.iter().copied().map(Some).collect()
    }
}

/// An allowed flow between container networks.
#[derive(Clone, Debug)]
struct Flow {
    from: Vec<Net>,
    to: Vec<Net>,
    proto: Proto,
    ports: Vec<(u16, u16)>,
}

pub struct Firewall {
    backend: Backend,
    input: Vec<Spec>,
    docker: Vec<Spec>,
    /// Change the running rules (false for an offline root: only files are written).
    live: bool,
    /// Write and enable slice-firewall.service.
    systemd: bool,
}

/// The observed state of SLICE's chains in one backend.
#[derive(Debug, Default, PartialEq)]
struct Chains {
    /// Normalised rules of each chain that exists, in order.
    chains: Vec<(String, Vec<String>)>,
}

impl Chains {
    fn get(&self, name: &str) -> Option<&[String]> {
        self.chains
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_slice())
    }
}

/// Parses `iptables-save` output: the filter table's chains and their normalised rules.
fn parse_iptables_save(text: &str) -> Chains {
    let mut out = Chains::default();
    let mut in_filter = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix('*') {
            in_filter = t == "filter";
        } else if line == "COMMIT" {
            in_filter = false;
        } else if !in_filter {
        } else if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                out.chains.push((name.to_string(), Vec::new()));
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let spec = normalise(spec);
            match out.chains.iter_mut().find(|(n, _)| n == chain) {
                Some((_, rules)) => rules.push(spec),
                None => out.chains.push((chain.to_string(), vec![spec])),
            }
        }
    }
    out
}

/// Parses `nft list table inet slice`: each chain's rules as printed, without the base chain's
/// `type … hook …` line. The hook line is kept apart so a changed hook or priority is drift.
fn parse_nft(text: &str) -> Chains {
    let mut out = Chains::default();
    let mut current: Option<usize> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("chain ")
            .and_then(|r| r.strip_suffix(" {"))
        {
            out.chains.push((name.to_string(), Vec::new()));
            current = Some(out.chains.len() - 1);
        } else if line == "}" {
            current = None;
        } else if let Some(i) = current {
            if !line.is_empty() {
                if let Some((_, rules)) = out.chains.get_mut(i) {
                    rules.push(line.to_string());
                }
            }
        }
    }
    out
}

/// The base chain line SLICE declares in its nftables table.
fn nft_hook(hook: &str) -> String {
    format!("type filter hook {hook} priority filter - 10; policy accept;")
}

/// Whether `chain` holds exactly one jump to `target`, before any rule that ends the chain for
/// every packet (such as Docker's `-j RETURN` at the end of DOCKER-USER).
fn jump_ok(rules: &[String], target: &str) -> bool {
    let jump = format!("-j {target}");
    let jumps: Vec<usize> = (0..rules.len()).filter(|&i| rules[i] == jump).collect();
    let terminal = rules.iter().position(|r| {
        matches!(r.as_str(), "-j RETURN" | "-j ACCEPT" | "-j DROP") || r.starts_with("-j REJECT")
    });
    match (jumps.as_slice(), terminal) {
        ([j], Some(t)) => *j < t,
        ([_], None) => true,
        _ => false,
    }
}

/// What the probe said, split by backend.
struct Probed<'a> {
    has_iptables: bool,
    iptables: Option<std::result::Result<&'a str, &'a str>>,
    /// `Some(Ok(None))`: nft exists and the table does not.
    nft: Option<std::result::Result<Option<&'a str>, &'a str>>,
}

fn split_probe(text: &str) -> Probed<'_> {
    let mut p = Probed {
        has_iptables: false,
        iptables: None,
        nft: None,
    };
    // Sections: a marker line, then its body up to the next marker.
    let mut rest = text;
    while let Some(start) = rest.find("#slice-") {
        let after = &rest[start..];
        let (marker, body_start) = match after.find('\n') {
            Some(i) => (&after[..i], &after[i + 1..]),
            None => (after, ""),
        };
        let end = if body_start.starts_with("#slice-") {
            0
        } else {
            body_start
                .find("\n#slice-")
                .map_or(body_start.len(), |i| i + 1)
        };
        let body = &body_start[..end];
        match marker.trim() {
            "#slice-has-iptables" => p.has_iptables = true,
            "#slice-iptables" => p.iptables = Some(Ok(body)),
            "#slice-iptables-failed" => p.iptables = Some(Err(body.trim())),
            "#slice-nft" => p.nft = Some(Ok(Some(body))),
            "#slice-nft-absent" => p.nft = Some(Ok(None)),
            "#slice-nft-failed" => p.nft = Some(Err(body.trim())),
            _ => {}
        }
        rest = &body_start[end..];
    }
    p
}

/// A file to write: its path, its contents now (if it exists) and the wanted contents.
type FileWrite = (&'static str, Option<Vec<u8>>, Vec<u8>);

/// What `diff` reports and `apply` does, worked out once from the observation.
struct Plan {
    backend: Backend,
    /// Rule changes of SLICE's chains (none means the running rules are right).
    rules: Vec<Change>,
    /// Hooks to (re)make: (base chain, SLICE's chain). iptables only.
    jumps: Vec<(&'static str, &'static str)>,
    /// DOCKER-USER does not exist yet (iptables only).
    create_docker_user: bool,
    /// Files to write: (path, old contents if any, new contents).
    files: Vec<FileWrite>,
    enable: bool,
}

impl Firewall {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        Ok(Box::new(Firewall::from_params(p, ctx)?))
    }

    fn from_params(p: &Params, ctx: &BuildCtx) -> Result<Firewall> {
        let backend = match p.choice("backend", &["auto", "iptables", "nftables"], "auto")? {
            "iptables" => Backend::Iptables,
            "nftables" => Backend::Nftables,
            _ => Backend::Auto,
        };
        let policy = p.choice("input_policy", &["accept", "drop"], "accept")?;
        let allow_lockout = p.opt_bool("allow_lockout")?.unwrap_or(false);
        let ssh_port = match p.opt_str("ssh_port")? {
            None => 22,
            Some(s) => s.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| {
                at(
                    p,
                    "ssh_port",
                    format!("`ssh_port` must be a port number, found `{s}`"),
                )
            })?,
        };
        let input = rules(p, "input", false)?;
        let containers = rules(p, "containers", true)?;
        let flows = flows(p)?;
        p.finish()?;

        let drop = policy == "drop";
        if drop && !allow_lockout {
            let opens_ssh = input.iter().any(|r| {
                r.verdict == Verdict::Accept
                    && r.proto == Proto::Tcp
                    && r.ports
                        .iter()
                        .any(|(lo, hi)| *lo <= ssh_port && ssh_port <= *hi)
            });
            if !opens_ssh {
                return Err(at(
                    p,
                    "input_policy",
                    format!("`input_policy: drop` with no `allow` rule for tcp port {ssh_port} would cut SSH, SLICE's own way in"),
                )
                .with_help("add an input rule `{ action: allow, proto: tcp, port: 22 }` (or set `ssh_port`), or `allow_lockout: true` if this is really wanted"));
            }
        }

        let mut input_specs: Vec<Spec> = input.iter().flat_map(Rule::specs).collect();
        if drop {
            // Loopback and replies to the host's own connections, then the final drop.
            input_specs.push(Spec {
                iif: Some("lo".into()),
                ..Spec::verdict(Verdict::Accept)
            });
            input_specs.push(Spec {
                established: true,
                ..Spec::verdict(Verdict::Accept)
            });
            input_specs.push(Spec::verdict(Verdict::Drop));
        }
        let mut docker: Vec<Spec> = containers.iter().flat_map(Rule::specs).collect();
        docker.extend(flow_specs(&flows));

        Ok(Firewall {
            backend,
            input: input_specs,
            docker,
            live: ctx.live,
            systemd: ctx.facts.init == "systemd",
        })
    }

    /// The iptables-restore file: SLICE's two chains only, for `--noflush`.
    fn restore_file(&self) -> String {
        let mut s = String::from(
            "# Managed by SLICE: only SLICE's own chains. Load with `iptables-restore --noflush`,\n\
             # which flushes the chains declared here and leaves every other chain alone.\n\
             *filter\n",
        );
        let _ = writeln!(s, ":{INPUT_CHAIN} - [0:0]");
        let _ = writeln!(s, ":{DOCKER_CHAIN} - [0:0]");
        for (chain, specs) in [(INPUT_CHAIN, &self.input), (DOCKER_CHAIN, &self.docker)] {
            for r in specs {
                let _ = writeln!(s, "-A {chain} {}", r.iptables());
            }
        }
        s.push_str("COMMIT\n");
        s
    }

    /// The nft script: creates the table if needed, empties it and defines it, in one
    /// transaction.
    fn nft_file(&self) -> String {
        let mut s = String::from("# Managed by SLICE: only the table inet slice.\ntable inet slice {}\nflush table inet slice\ntable inet slice {\n");
        for (name, hook, specs) in [
            ("input", "input", &self.input),
            ("forward", "forward", &self.docker),
        ] {
            let _ = writeln!(s, "\tchain {name} {{\n\t\t{}", nft_hook(hook));
            for r in specs {
                let _ = writeln!(s, "\t\t{}", r.nft());
            }
            s.push_str("\t}\n");
        }
        s.push_str("}\n");
        s
    }

    /// Commands that load the rules file into the running kernel and hook SLICE's chains,
    /// run by apply and by the unit at boot. `fix_jumps` first removes misplaced jumps.
    fn load_commands(backend: Backend, fix_jumps: &[(&str, &str)]) -> String {
        match backend {
            Backend::Nftables => format!("nft -f {NFT_RULES}"),
            _ => {
                let mut s = String::from(
                    "iptables -w -n -L DOCKER-USER >/dev/null 2>&1 || iptables -w -N DOCKER-USER",
                );
                let _ = write!(s, " && iptables-restore -w --noflush {IPT_RULES}");
                for (base, mine) in [("INPUT", INPUT_CHAIN), ("DOCKER-USER", DOCKER_CHAIN)] {
                    if fix_jumps.iter().any(|(b, _)| *b == base) {
                        let _ = write!(
                            s,
                            " && {{ while iptables -w -D {base} -j {mine} 2>/dev/null; do :; done; iptables -w -I {base} 1 -j {mine}; }}"
                        );
                    } else {
                        let _ = write!(
                            s,
                            " && {{ iptables -w -C {base} -j {mine} 2>/dev/null || iptables -w -I {base} 1 -j {mine}; }}"
                        );
                    }
                }
                s
            }
        }
    }

    fn unit(backend: Backend) -> String {
        let load = Firewall::load_commands(backend, &[]);
        // `$` is special to systemd; the commands hold none, but quote them for sh.
        let quoted = shlex::try_quote(&load).map_or_else(|_| load.clone(), |q| q.into_owned());
        format!(
            "# Managed by SLICE.\n\
             [Unit]\n\
             Description=SLICE firewall rules (SLICE's own chains only)\n\
             # Before any interface is up, so INPUT is protected from the start. DOCKER-USER is\n\
             # created here when missing; dockerd keeps an existing DOCKER-USER and its rules.\n\
             DefaultDependencies=no\n\
             Wants=network-pre.target\n\
             Before=network-pre.target docker.service\n\
             After=systemd-modules-load.service local-fs.target\n\
             Conflicts=shutdown.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             ExecStart=/bin/sh -c {quoted}\n\
             \n\
             [Install]\n\
             WantedBy=sysinit.target\n"
        )
    }

    fn resolve_backend(&self, probed: &Probed) -> Backend {
        match self.backend {
            Backend::Auto if probed.has_iptables => Backend::Iptables,
            Backend::Auto => Backend::Nftables,
            b => b,
        }
    }

    fn plan(&self, obs: &Observed) -> std::result::Result<Plan, String> {
        let mut rules = Vec::new();
        let mut jumps = Vec::new();
        let mut create_docker_user = false;
        let backend = if self.live {
            let out = obs.run(0)?;
            let text = String::from_utf8_lossy(&out.stdout);
            let probed = split_probe(&text);
            let backend = self.resolve_backend(&probed);
            match backend {
                Backend::Nftables => {
                    let table = match probed.nft {
                        None => {
                            return Err(
                                "the nftables backend needs the `nft` command (package nftables)"
                                    .into(),
                            )
                        }
                        Some(Err(e)) => return Err(format!("cannot list table inet slice: {e}")),
                        Some(Ok(t)) => t.map(parse_nft).unwrap_or_default(),
                    };
                    for (name, hook, specs) in [
                        ("input", "input", &self.input),
                        ("forward", "forward", &self.docker),
                    ] {
                        let mut want = vec![nft_hook(hook)];
                        want.extend(specs.iter().map(Spec::nft));
                        let have = table.get(name).unwrap_or_default();
                        rules.extend(rule_changes(&format!("inet slice {name}"), have, &want, 0));
                    }
                }
                _ => {
                    let saved = match probed.iptables {
                        None => return Err("the iptables backend needs `iptables` and `iptables-save` (package iptables)".into()),
                        Some(Err(e)) => return Err(format!("cannot read the filter table: {e}")),
                        Some(Ok(t)) => parse_iptables_save(t),
                    };
                    for (chain, specs) in [(INPUT_CHAIN, &self.input), (DOCKER_CHAIN, &self.docker)]
                    {
                        let want: Vec<String> = specs.iter().map(Spec::iptables).collect();
                        match saved.get(chain) {
                            None => {
                                rules.push(Change::new(
                                    format!("chain {chain}"),
                                    Some("absent".into()),
                                    Some("present".into()),
                                ));
                                rules.extend(rule_changes(chain, &[], &want, 1));
                            }
                            Some(have) => rules.extend(rule_changes(chain, have, &want, 1)),
                        }
                    }
                    if saved.get("DOCKER-USER").is_none() {
                        create_docker_user = true;
                        rules.push(Change::new(
                            "chain DOCKER-USER",
                            Some("absent".into()),
                            Some("present".into()),
                        ));
                    }
                    for (base, mine) in [("INPUT", INPUT_CHAIN), ("DOCKER-USER", DOCKER_CHAIN)] {
                        let have = saved.get(base).unwrap_or_default();
                        if !jump_ok(have, mine) {
                            let n = have.iter().filter(|r| **r == format!("-j {mine}")).count();
                            let before = match n {
                                0 => "absent".to_string(),
                                1 => "below a rule that ends the chain".to_string(),
                                n => format!("{n} jumps"),
                            };
                            jumps.push((base, mine));
                            rules.push(Change::new(
                                format!("{base} jump to {mine}"),
                                Some(before),
                                Some("one jump, first rule".into()),
                            ));
                        }
                    }
                }
            }
            backend
        } else {
            // An offline root has no running rules; auto means iptables when the image has it.
            match self.backend {
                Backend::Auto if obs.stat(0)?.is_some() => Backend::Iptables,
                Backend::Auto => Backend::Nftables,
                b => b,
            }
        };

        let (path, content, at) = match backend {
            Backend::Nftables => (NFT_RULES, self.nft_file(), 2),
            _ => (IPT_RULES, self.restore_file(), 1),
        };
        let mut files = Vec::new();
        let old_rules = obs.read(at)?.map(<[u8]>::to_vec);
        if old_rules.as_deref() != Some(content.as_bytes()) {
            files.push((path, old_rules, content.into_bytes()));
        }
        let mut enable = false;
        if self.systemd {
            let unit = Firewall::unit(backend);
            let old_unit = obs.read(3)?.map(<[u8]>::to_vec);
            if old_unit.as_deref() != Some(unit.as_bytes()) {
                files.push((UNIT, old_unit, unit.into_bytes()));
            }
            enable = obs.stat(4)?.is_none();
        }
        Ok(Plan {
            backend,
            rules,
            jumps,
            create_docker_user,
            files,
            enable,
        })
    }
}

/// Changes between the rules a chain has and the ones wanted, position by position
/// (order matters in a chain). `first` is the number shown for the first rule.
fn rule_changes(chain: &str, have: &[String], want: &[String], first: usize) -> Vec<Change> {
    let mut out = Vec::new();
    for i in 0..have.len().max(want.len()) {
        let (h, w) = (have.get(i), want.get(i));
        if h != w {
            out.push(Change::new(
                format!("{chain} rule {}", i + first),
                Some(h.cloned().unwrap_or_else(|| "(none)".into())),
                Some(w.cloned().unwrap_or_else(|| "(none)".into())),
            ));
        }
    }
    out
}

/// Reads a list of rules (`input` or `containers`).
fn rules(p: &Params, key: &'static str, docker: bool) -> Result<Vec<Rule>> {
    let Some(n) = p.node(key) else {
        return Ok(Vec::new());
    };
    let Value::Seq(items) = &n.value else {
        return Err(p.error(
            n,
            format!("`{key}` must be a list of rules, found {}", n.type_name()),
        ));
    };
    items.iter().map(|item| rule(item, key, docker)).collect()
}

fn rule(item: &Node, key: &'static str, docker: bool) -> Result<Rule> {
    let r = Params::new(item, "firewall")?;
    let action = r.choice("action", &["allow", "deny", "reject"], "allow")?;
    if r.node("action").is_none() {
        return Err(r.error(
            item,
            format!("a rule in `{key}` needs `action` (allow, deny or reject)"),
        ));
    }
    let proto = proto(&r)?;
    let ports = ports(&r, "port", proto)?;
    let sources = nets(&r, "source")?;
    let dests = nets(&r, "destination")?;
    let iif = iface(&r, "in")?;
    let oif = iface(&r, "out")?;
    let comment = comment(&r)?;
    r.finish()?;
    let verdict = match action {
        // In DOCKER-USER, allowing means leaving the packet to Docker's own rules, which
        // still keep unpublished ports and other networks closed.
        "allow" if docker => Verdict::Return,
        "allow" => Verdict::Accept,
        "reject" => Verdict::Reject,
        _ => Verdict::Drop,
    };
    Ok(Rule {
        verdict,
        proto,
        ports,
        sources,
        dests,
        iif,
        oif,
        comment,
    })
}

fn proto(r: &Params) -> Result<Proto> {
    Ok(
        match r.choice("proto", &["tcp", "udp", "icmp", "any"], "any")? {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            _ => Proto::Any,
        },
    )
}

/// `port`: a number, a range "1000:2000" (or 1000-2000), or a list of those.
fn ports(r: &Params, key: &'static str, proto: Proto) -> Result<Vec<(u16, u16)>> {
    let items = r.str_list(key)?;
    if items.is_empty() {
        return Ok(Vec::new());
    }
    if !matches!(proto, Proto::Tcp | Proto::Udp) {
        return Err(at(
            r,
            key,
            format!("`{key}` needs `proto: tcp` or `proto: udp`"),
        ));
    }
    let mut out = Vec::new();
    for s in &items {
        let parsed = match s.split_once([':', '-']) {
            Some((a, b)) => a
                .trim()
                .parse::<u16>()
                .ok()
                .zip(b.trim().parse::<u16>().ok()),
            None => s.trim().parse::<u16>().ok().map(|n| (n, n)),
        };
        match parsed {
            Some((lo, hi)) if lo > 0 && lo <= hi => out.push((lo, hi)),
            _ => {
                return Err(at(
                    r,
                    key,
                    format!("`{s}` is not a port (1-65535) or a range such as 1000:2000"),
                ))
            }
        }
    }
    let weight: usize = out
        .iter()
        .map(|(lo, hi)| if lo == hi { 1 } else { 2 })
        .sum();
    if out.len() > 1 && weight > MULTIPORT_MAX {
        return Err(at(r, key, format!("at most {MULTIPORT_MAX} ports in one rule (a range counts as two); split it into several rules")));
    }
    Ok(out)
}

fn nets(r: &Params, key: &'static str) -> Result<Vec<Net>> {
    r.str_list(key)?
        .iter()
        .map(|s| {
            Net::parse(s.trim()).ok_or_else(|| {
                at(r, key, format!("`{s}` is not an IPv4 address or network such as 10.0.0.0/8 (IPv6 is not supported yet)"))
            })
        })
        .collect()
}

fn iface(r: &Params, key: &'static str) -> Result<Option<String>> {
    let Some(s) = r.opt_str(key)? else {
        return Ok(None);
    };
    // Linux interface names: at most 15 bytes; `+` is iptables' wildcard suffix.
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c) || c == '+')
        && !s[..s.len() - 1].contains('+');
    if !ok {
        return Err(at(r, key, format!("`{s}` is not an interface name")));
    }
    Ok(Some(s))
}

fn comment(r: &Params) -> Result<Option<String>> {
    let Some(s) = r.opt_str("comment")? else {
        return Ok(None);
    };
    // Kept to characters that need no escaping in iptables, nft and the heredoc SLICE sends.
    let ok = !s.trim().is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.,:;/@+=()#-".contains(c))
        && !s.contains(EOF);
    if !ok {
        return Err(at(
            r,
            "comment",
            "`comment` must be up to 200 letters, digits, spaces and _.,:;/@+=()#-",
        ));
    }
    Ok(Some(s.trim().to_string()))
}

fn flows(p: &Params) -> Result<Vec<Flow>> {
    let Some(n) = p.node("flows") else {
        return Ok(Vec::new());
    };
    let Value::Seq(items) = &n.value else {
        return Err(p.error(
            n,
            format!("`flows` must be a list, found {}", n.type_name()),
        ));
    };
    items
        .iter()
        .map(|item| {
            let r = Params::new(item, "firewall")?;
            let from = nets(&r, "from")?;
            let to = nets(&r, "to")?;
            let proto = proto(&r)?;
            let ports = ports(&r, "port", proto)?;
            r.finish()?;
            if from.is_empty() || to.is_empty() {
                return Err(r.error(item, "a flow needs `from` and `to` (container subnets)"));
            }
            Ok(Flow {
                from,
                to,
                proto,
                ports,
            })
        })
        .collect()
}

/// The DOCKER-USER rules for flows: each allowed flow accepted (new connections), replies of
/// connections between the listed subnets accepted, then everything else between two
/// different listed subnets dropped. Traffic within one subnet and to or from anything else is
/// left to Docker.
fn flow_specs(flows: &[Flow]) -> Vec<Spec> {
    let mut out = Vec::new();
    let mut subnets: Vec<Net> = Vec::new();
    for f in flows {
        for n in f.from.iter().chain(&f.to) {
            if !subnets.contains(n) {
                subnets.push(*n);
            }
        }
        for s in &f.from {
            for d in &f.to {
                out.push(Spec {
                    src: Some(*s),
                    dst: Some(*d),
                    proto: f.proto,
                    ports: f.ports.clone(),
                    ..Spec::verdict(Verdict::Accept)
                });
            }
        }
    }
    for established in [true, false] {
        for s in &subnets {
            for d in subnets.iter().filter(|d| *d != s) {
                out.push(Spec {
                    src: Some(*s),
                    dst: Some(*d),
                    established,
                    ..Spec::verdict(if established {
                        Verdict::Accept
                    } else {
                        Verdict::Drop
                    })
                });
            }
        }
    }
    out
}

/// Runs a command, failing with its output when it does not succeed.
fn run(t: &dyn Transport, cmd: &str, what: &str) -> std::result::Result<(), String> {
    let out = t.run(cmd).map_err(|e| format!("cannot {what}: {e}"))?;
    if !out.success() {
        return Err(format!(
            "cannot {what} (status {}): {}",
            out.status,
            out.message()
        ));
    }
    Ok(())
}

impl Resource for Firewall {
    fn target(&self) -> String {
        match self.backend {
            Backend::Auto => "filter".into(),
            Backend::Iptables => "iptables".into(),
            Backend::Nftables => "nftables".into(),
        }
    }

    fn paths(&self) -> Vec<&str> {
        let mut v = vec![IPT_RULES, NFT_RULES];
        if self.systemd {
            v.push(UNIT);
        }
        v
    }

    fn probes(&self) -> Vec<Probe> {
        vec![
            if self.live {
                Probe::Run(PROBE.into())
            } else {
                // An offline root runs nothing: whether it has iptables decides `auto`.
                Probe::Stat("/usr/sbin/iptables".into())
            },
            Probe::Read(IPT_RULES.into()),
            Probe::Read(NFT_RULES.into()),
            Probe::Read(UNIT.into()),
            Probe::Stat(UNIT_LINK.into()),
        ]
    }

    /// SLICE's chains (or table) as observed, and the hooks as they were: what the host puts
    /// back by itself if applying cuts SLICE off. Other chains are never touched.
    fn revert(&self, obs: &Observed) -> Option<String> {
        if !self.live {
            return None;
        }
        let out = obs.run(0).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let probed = split_probe(&text);
        match self.resolve_backend(&probed) {
            Backend::Nftables => match probed.nft? {
                Ok(Some(table)) => Some(format!(
                    "nft -f - <<'SLICE_EOF'\ntable inet slice {{}}\nflush table inet slice\n{table}\nSLICE_EOF"
                )),
                Ok(None) => Some("nft delete table inet slice 2>/dev/null; true".into()),
                Err(_) => None,
            },
            _ => {
                let saved = probed.iptables?.ok()?;
                let mine: Vec<&str> = saved
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with(&format!("-A {INPUT_CHAIN} ")) || l.starts_with(&format!("-A {DOCKER_CHAIN} ")))
                    .collect();
                let mut script = format!(
                    "iptables-restore -w --noflush <<'SLICE_EOF'\n*filter\n:{INPUT_CHAIN} - [0:0]\n:{DOCKER_CHAIN} - [0:0]\n{}{}COMMIT\nSLICE_EOF\n",
                    mine.join("\n"),
                    if mine.is_empty() { "" } else { "\n" }
                );
                for (base, chain) in [("INPUT", INPUT_CHAIN), ("DOCKER-USER", DOCKER_CHAIN)] {
                    let hooked = saved.lines().any(|l| l.trim() == format!("-A {base} -j {chain}"));
                    if hooked {
                        script.push_str(&format!("iptables -w -C {base} -j {chain} 2>/dev/null || iptables -w -I {base} 1 -j {chain}\n"));
                    } else {
                        script.push_str(&format!("while iptables -w -D {base} -j {chain} 2>/dev/null; do :; done\n"));
                    }
                }
                Some(script)
            }
        }
    }

    fn diff(&self, obs: &Observed) -> std::result::Result<Vec<Change>, String> {
        let plan = self.plan(obs)?;
        let mut out = plan.rules;
        for (path, old, new) in &plan.files {
            out.push(Change {
                what: format!("file {path}"),
                ..content_change(path, old.as_deref().unwrap_or_default(), new)
            });
        }
        if plan.enable {
            out.push(Change::new(
                "slice-firewall.service",
                Some("disabled".into()),
                Some("enabled".into()),
            ));
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> std::result::Result<(), String> {
        let plan = self.plan(obs)?;
        let (path, content) = match plan.backend {
            Backend::Nftables => (NFT_RULES, self.nft_file()),
            _ => (IPT_RULES, self.restore_file()),
        };
        if self.live && (!plan.rules.is_empty() || plan.create_docker_user) {
            // Test the exact text before anything is written or loaded.
            let test = match plan.backend {
                Backend::Nftables => format!("nft -c -f - <<'{EOF}'\n{content}{EOF}\n"),
                _ => format!("iptables-restore -w --test --noflush <<'{EOF}'\n{content}{EOF}\n"),
            };
            run(t, &test, "test the firewall rules")?;
        }
        let writes_rules = plan.files.iter().any(|(p, _, _)| *p == path);
        if writes_rules
            && t.stat("/etc/slice")
                .map_err(|e| format!("/etc/slice: {e}"))?
                .is_none()
        {
            let attrs = Attrs {
                mode: Some(0o755),
                ..Attrs::default()
            };
            t.mkdir("/etc/slice", &attrs)
                .map_err(|e| format!("/etc/slice: {e}"))?;
        }
        for (p, old, new) in &plan.files {
            let attrs = Attrs {
                mode: old
                    .is_none()
                    .then_some(if *p == UNIT { 0o644 } else { 0o600 }),
                ..Attrs::default()
            };
            t.write(p, new, &attrs).map_err(|e| format!("{p}: {e}"))?;
        }
        if self.live && (!plan.rules.is_empty() || plan.create_docker_user) {
            let cmd = Firewall::load_commands(plan.backend, &plan.jumps);
            run(t, &cmd, "load the firewall rules")?;
        }
        if plan.enable {
            run(
                t,
                "systemctl enable slice-firewall.service",
                "enable slice-firewall.service",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Observed;
    use crate::resources::testing::{build, build_err, build_with, debian_facts};
    use crate::transport::{Answer, Output, Stat};

    /// `iptables-save -t filter` recorded on a kind b lab host (Debian 12, docker.io
    /// 20.10.24+dfsg1, iptables-nft) with one container publishing port 80 on the default bridge
    /// and one user network (br-…) without containers, exactly as Docker laid it out: user
    /// networks' FORWARD rules come before docker0's.
    const DOCKER_SAVE: &str =
        "# Generated by iptables-save v1.8.9 (nf_tables) on Tue Dec  1 16:30:49 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o br-42b08770a7f9 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o br-42b08770a7f9 -j DOCKER
-A FORWARD -i br-42b08770a7f9 ! -o br-42b08770a7f9 -j ACCEPT
-A FORWARD -i br-42b08770a7f9 -o br-42b08770a7f9 -j ACCEPT
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i br-42b08770a7f9 ! -o br-42b08770a7f9 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o br-42b08770a7f9 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
# Completed on Tue Dec  1 16:30:49 2026
";

    /// What iptables-save printed after SLICE loaded the rules of `PLAYBOOK` (recorded on a lab
    /// host with iptables-nft): the implicit `-m tcp`, quoting only where needed.
    const APPLIED: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:SLICE-DOCKER-USER - [0:0]
:SLICE-INPUT - [0:0]
-A INPUT -j SLICE-INPUT
-A FORWARD -j DOCKER-USER
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-USER -j SLICE-DOCKER-USER
-A DOCKER-USER -j RETURN
-A SLICE-DOCKER-USER -s 10.9.0.0/16 -j DROP
-A SLICE-INPUT -p tcp -m tcp --dport 22 -m comment --comment \"ssh in\" -j ACCEPT
-A SLICE-INPUT -s 10.0.0.0/8 -p tcp -m multiport --dports 80,8000:8080 -j ACCEPT
-A SLICE-INPUT -i lo -j ACCEPT
-A SLICE-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A SLICE-INPUT -j DROP
COMMIT
";

    const PLAYBOOK: &str = "input_policy: drop
input:
  - { action: allow, proto: tcp, port: 22, comment: ssh in }
  - { action: allow, proto: tcp, port: [80, '8000:8080'], source: 10.0.0.1/8 }
containers:
  - { action: deny, source: 10.9.0.0/16 }
";

    fn out(stdout: &str) -> Answer {
        Answer::Run(Output {
            status: 0,
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        })
    }

    fn file_stat() -> Stat {
        Stat {
            kind: crate::transport::FileType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
        }
    }

    /// Diffs `res` against a probe output and files (rules file, unit) as the host had them.
    fn diff_on(
        res: &dyn Resource,
        probe: &str,
        files: [Option<&str>; 3],
        enabled: bool,
    ) -> Vec<Change> {
        let probes = res.probes();
        let answers = vec![
            out(probe),
            Answer::Read(files[0].map(|s| s.as_bytes().to_vec())),
            Answer::Read(files[1].map(|s| s.as_bytes().to_vec())),
            Answer::Read(files[2].map(|s| s.as_bytes().to_vec())),
            Answer::Stat(enabled.then(file_stat)),
        ];
        res.diff(&Observed {
            answers: &answers,
            probes: &probes,
        })
        .unwrap()
    }

    fn iptables_probe(save: &str) -> String {
        format!("#slice-has-iptables\n#slice-iptables\n{save}\n#slice-nft-absent\n")
    }

    fn firewall(yaml: &str) -> Firewall {
        let node = crate::yaml::parse(&crate::error::Source::new("t.yml", yaml)).unwrap();
        let p = Params::new(&node, "firewall").unwrap();
        let facts = debian_facts();
        let ctx = BuildCtx {
            live: true,
            facts: &facts,
            files: &crate::resources::testing::NoFiles,
        };
        Firewall::from_params(&p, &ctx).unwrap()
    }

    #[test]
    fn iptables_save_is_parsed_into_normalised_chains() {
        let c = parse_iptables_save(DOCKER_SAVE);
        assert_eq!(
            c.get("DOCKER").unwrap(),
            ["-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp --dport 80 -j ACCEPT"]
        );
        assert_eq!(c.get("DOCKER-USER").unwrap(), ["-j RETURN"]);
        assert_eq!(c.get("INPUT").unwrap(), [] as [String; 0]);
        assert!(c.get("SLICE-INPUT").is_none());
        assert_eq!(c.get("FORWARD").unwrap().len(), 10);
        // Quoting and the implicit match do not matter.
        assert_eq!(
            normalise("-p tcp -m tcp --dport 22 -m comment --comment \"ssh in\" -j ACCEPT"),
            normalise("-p tcp --dport 22 -m comment --comment 'ssh in' -j ACCEPT")
        );
        // Other tables are ignored; garbage does not panic.
        let other = parse_iptables_save("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j DOCKER\nCOMMIT\n-A x\n\"\n*filter\n-A\n-A INPUT -s \"unbalanced\n");
        assert!(other.get("PREROUTING").is_none());
        assert_eq!(other.get("INPUT").unwrap().len(), 1);
    }

    #[test]
    fn a_docker_host_without_slice_rules_shows_every_rule_and_hook() {
        let fw = firewall(PLAYBOOK);
        let changes = diff_on(&fw, &iptables_probe(DOCKER_SAVE), [None, None, None], false);
        let text: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{}: {} → {}",
                    c.what,
                    c.before.as_deref().unwrap_or("-"),
                    c.after.as_deref().unwrap_or("-")
                )
            })
            .collect();
        assert_eq!(
            text,
            [
                "chain SLICE-INPUT: absent → present",
                "SLICE-INPUT rule 1: (none) → -p tcp --dport 22 -m comment --comment \"ssh in\" -j ACCEPT",
                "SLICE-INPUT rule 2: (none) → -s 10.0.0.0/8 -p tcp -m multiport --dports 80,8000:8080 -j ACCEPT",
                "SLICE-INPUT rule 3: (none) → -i lo -j ACCEPT",
                "SLICE-INPUT rule 4: (none) → -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "SLICE-INPUT rule 5: (none) → -j DROP",
                "chain SLICE-DOCKER-USER: absent → present",
                "SLICE-DOCKER-USER rule 1: (none) → -s 10.9.0.0/16 -j DROP",
                "INPUT jump to SLICE-INPUT: absent → one jump, first rule",
                "DOCKER-USER jump to SLICE-DOCKER-USER: absent → one jump, first rule",
                "file /etc/slice/firewall.rules: - → -",
                "file /etc/systemd/system/slice-firewall.service: - → -",
                "slice-firewall.service: disabled → enabled",
            ]
        );
    }

    #[test]
    fn the_applied_rules_as_iptables_prints_them_are_in_sync() {
        let fw = firewall(PLAYBOOK);
        let rules = fw.restore_file();
        let unit = Firewall::unit(Backend::Iptables);
        let changes = diff_on(
            &fw,
            &iptables_probe(APPLIED),
            [Some(&rules), None, Some(&unit)],
            true,
        );
        assert_eq!(changes, []);
        // A rule changed by hand is drift at its position; a misplaced hook is too.
        let edited = APPLIED.replace("--dport 22 ", "--dport 2222 ").replace(
            "-A INPUT -j SLICE-INPUT\n",
            "-A INPUT -j ACCEPT\n-A INPUT -j SLICE-INPUT\n",
        );
        let changes = diff_on(
            &fw,
            &iptables_probe(&edited),
            [Some(&rules), None, Some(&unit)],
            true,
        );
        let whats: Vec<&str> = changes.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(whats, ["SLICE-INPUT rule 1", "INPUT jump to SLICE-INPUT"]);
        assert_eq!(
            changes[1].before.as_deref(),
            Some("below a rule that ends the chain")
        );
        // A removed last rule shows as (none) on the wanted side's opposite.
        let shorter = APPLIED.replace("-A SLICE-INPUT -j DROP\n", "");
        let changes = diff_on(
            &fw,
            &iptables_probe(&shorter),
            [Some(&rules), None, Some(&unit)],
            true,
        );
        assert_eq!(
            changes,
            [Change::new(
                "SLICE-INPUT rule 5",
                Some("(none)".into()),
                Some("-j DROP".into())
            )]
        );
    }

    #[test]
    fn the_restore_file_declares_only_slices_chains() {
        let fw = firewall(PLAYBOOK);
        let f = fw.restore_file();
        let decls: Vec<&str> = f.lines().filter(|l| l.starts_with(':')).collect();
        assert_eq!(
            decls,
            [":SLICE-INPUT - [0:0]", ":SLICE-DOCKER-USER - [0:0]"]
        );
        assert!(
            f.lines()
                .filter(|l| l.starts_with('-'))
                .all(|l| l.starts_with("-A SLICE-")),
            "{f}"
        );
        assert!(f.ends_with("COMMIT\n"));
        let load = Firewall::load_commands(Backend::Iptables, &[("INPUT", INPUT_CHAIN)]);
        assert!(
            load.contains("while iptables -w -D INPUT -j SLICE-INPUT"),
            "{load}"
        );
        assert!(
            load.contains("iptables -w -C DOCKER-USER -j SLICE-DOCKER-USER"),
            "{load}"
        );
        assert!(
            !load.contains("-F"),
            "never flushes a chain by command: {load}"
        );
    }

    #[test]
    fn jumps_must_be_single_and_above_any_final_rule() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(jump_ok(&r(&["-j SLICE-X", "-j RETURN"]), "SLICE-X"));
        assert!(jump_ok(
            &r(&["-s 1.2.3.4/32 -j DROP", "-j SLICE-X"]),
            "SLICE-X"
        ));
        assert!(!jump_ok(&r(&["-j RETURN", "-j SLICE-X"]), "SLICE-X"));
        assert!(!jump_ok(&r(&["-j SLICE-X", "-j SLICE-X"]), "SLICE-X"));
        assert!(!jump_ok(&r(&[]), "SLICE-X"));
    }

    #[test]
    fn flows_accept_listed_traffic_then_drop_between_subnets() {
        let fw = firewall(
            "flows:\n  - { from: 172.18.0.0/16, to: [172.19.0.0/16], proto: tcp, port: 5432 }\n",
        );
        let specs: Vec<String> = fw.docker.iter().map(Spec::iptables).collect();
        assert_eq!(
            specs,
            [
                "-s 172.18.0.0/16 -d 172.19.0.0/16 -p tcp --dport 5432 -j ACCEPT",
                "-s 172.18.0.0/16 -d 172.19.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-s 172.19.0.0/16 -d 172.18.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                "-s 172.18.0.0/16 -d 172.19.0.0/16 -j DROP",
                "-s 172.19.0.0/16 -d 172.18.0.0/16 -j DROP",
            ]
        );
        // Container rules: allow only returns to Docker's own rules.
        let fw = firewall("containers:\n  - { action: allow, proto: udp, port: 53, in: eth0 }\n  - { action: reject, destination: [10.1.0.0/16, 10.2.0.5] }\n");
        let specs: Vec<String> = fw.docker.iter().map(Spec::iptables).collect();
        assert_eq!(
            specs,
            [
                "-i eth0 -p udp --dport 53 -j RETURN",
                "-d 10.1.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
                "-d 10.2.0.5/32 -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
    }

    /// `nft list table inet slice` recorded on a lab host after loading SLICE's script.
    const NFT_LISTED: &str = "table inet slice {
\tchain input {
\t\ttype filter hook input priority filter - 10; policy accept;
\t\ttcp dport 22 accept comment \"ssh in\"
\t\tip saddr 10.0.0.0/8 tcp dport { 80, 8000-8080 } accept
\t\tiifname \"lo\" accept
\t\tct state established,related accept
\t\tdrop
\t}

\tchain forward {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tip saddr 10.9.0.0/16 drop
\t}
}
";

    #[test]
    fn nft_listing_is_compared_rule_by_rule() {
        let mut fw = firewall(PLAYBOOK);
        fw.backend = Backend::Nftables;
        let script = fw.nft_file();
        let unit = Firewall::unit(Backend::Nftables);
        let probe =
            format!("#slice-has-iptables\n#slice-iptables\n{DOCKER_SAVE}#slice-nft\n{NFT_LISTED}");
        assert_eq!(
            diff_on(&fw, &probe, [None, Some(&script), Some(&unit)], true),
            []
        );
        let absent = "#slice-nft-absent\n";
        let changes = diff_on(&fw, absent, [None, Some(&script), Some(&unit)], true);
        assert_eq!(changes.len(), 8);
        assert_eq!(changes[0].what, "inet slice input rule 0");
        assert_eq!(
            changes[0].after.as_deref(),
            Some("type filter hook input priority filter - 10; policy accept;")
        );
        assert!(script.starts_with("# Managed by SLICE: only the table inet slice.\ntable inet slice {}\nflush table inet slice\n"));
        // Auto picks nftables where there is no iptables command.
        let mut auto = firewall(PLAYBOOK);
        auto.backend = Backend::Auto;
        assert_eq!(
            diff_on(
                &auto,
                &format!("#slice-nft\n{NFT_LISTED}"),
                [None, Some(&script), Some(&unit)],
                true
            ),
            []
        );
    }

    #[test]
    fn probe_failures_are_task_failures() {
        let fw = firewall(PLAYBOOK);
        let probes = fw.probes();
        let answers = vec![
            out("#slice-has-iptables\n#slice-iptables-failed\niptables-save: Permission denied\n"),
            Answer::Read(None),
            Answer::Read(None),
            Answer::Read(None),
            Answer::Stat(None),
        ];
        let e = fw
            .diff(&Observed {
                answers: &answers,
                probes: &probes,
            })
            .unwrap_err();
        assert_eq!(
            e,
            "cannot read the filter table: iptables-save: Permission denied"
        );
        let answers = vec![
            out(""),
            Answer::Read(None),
            Answer::Read(None),
            Answer::Read(None),
            Answer::Stat(None),
        ];
        let e = fw
            .diff(&Observed {
                answers: &answers,
                probes: &probes,
            })
            .unwrap_err();
        assert!(e.contains("needs the `nft` command"), "{e}");
    }

    #[test]
    fn drop_without_ssh_is_refused() {
        assert_eq!(
            build_err("firewall", "input_policy: drop\ninput:\n  - { action: allow, proto: tcp, port: 80 }\n"),
            "1:15: `input_policy: drop` with no `allow` rule for tcp port 22 would cut SSH, SLICE's own way in"
        );
        assert!(build(
            "firewall",
            "input_policy: drop\nallow_lockout: true\n",
            true
        )
        .is_ok());
        assert!(build(
            "firewall",
            "input_policy: drop\ninput: [{ action: allow, proto: tcp, port: '20:30' }]\n",
            true
        )
        .is_ok());
        assert!(build("firewall", "input_policy: drop\nssh_port: 2222\ninput: [{ action: allow, proto: tcp, port: 2222 }]\n", true).is_ok());
    }

    #[test]
    fn bad_rules_are_refused_where_written() {
        let cases = [
            ("input: [{ action: allow, port: 22 }]\n", "`port` needs `proto: tcp` or `proto: udp`"),
            ("input: [{ action: allow, proto: tcp, port: 70000 }]\n", "`70000` is not a port (1-65535) or a range such as 1000:2000"),
            ("input: [{ action: allow, proto: tcp, port: '20:10' }]\n", "`20:10` is not a port (1-65535) or a range such as 1000:2000"),
            ("input: [{ action: allow, source: 10.0.0.0/33 }]\n", "`10.0.0.0/33` is not an IPv4 address or network such as 10.0.0.0/8 (IPv6 is not supported yet)"),
            ("input: [{ action: allow, source: 'fd00::/8' }]\n", "`fd00::/8` is not an IPv4 address or network such as 10.0.0.0/8 (IPv6 is not supported yet)"),
            ("input: [{ action: allow, comment: 'a\"b' }]\n", "`comment` must be up to 200 letters, digits, spaces and _.,:;/@+=()#-"),
            ("input: [{ action: allow, in: 'eth0; rm' }]\n", "`eth0; rm` is not an interface name"),
            ("input: [{ proto: tcp }]\n", "a rule in `input` needs `action` (allow, deny or reject)"),
            ("input: [{ action: accept }]\n", "`action` must be one of allow, deny, reject, found `accept`"),
            ("input: [{ action: allow, sorce: 1.2.3.4 }]\n", "unknown key `sorce` for `firewall`"),
            ("input: { action: allow }\n", "`input` must be a list of rules, found a mapping"),
            ("flows: [{ from: 172.18.0.0/16 }]\n", "a flow needs `from` and `to` (container subnets)"),
            ("backend: ufw\n", "`backend` must be one of auto, iptables, nftables, found `ufw`"),
        ];
        for (yaml, msg) in cases {
            let e = build_err("firewall", yaml);
            assert!(e.ends_with(msg), "{yaml}: {e}");
        }
        let many: Vec<String> = (1..=16).map(|n| n.to_string()).collect();
        let e = build_err(
            "firewall",
            &format!(
                "input: [{{ action: allow, proto: tcp, port: [{}] }}]\n",
                many.join(", ")
            ),
        );
        assert!(e.contains("at most 15 ports"), "{e}");
    }

    #[test]
    fn an_offline_root_gets_files_only() {
        let facts = crate::facts::Facts {
            live: false,
            ..debian_facts()
        };
        let res = build_with("firewall", PLAYBOOK, &facts).unwrap();
        assert!(res.probes().iter().all(|p| !matches!(p, Probe::Run(_))));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        std::fs::write(dir.path().join("usr/sbin/iptables"), "").unwrap();
        std::fs::create_dir_all(dir.path().join("etc/systemd/system/sysinit.target.wants"))
            .unwrap();
        // Stands in for `systemctl enable`, which the test machine's root would not have.
        std::os::unix::fs::symlink(
            "../slice-firewall.service",
            dir.path()
                .join("etc/systemd/system/sysinit.target.wants/slice-firewall.service"),
        )
        .unwrap();
        let t = crate::transport::Local::with_root(dir.path()).unwrap();
        let changes = crate::resources::testing::converge(res.as_ref(), &t, dir.path());
        let whats: Vec<&str> = changes.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "file /etc/slice/firewall.rules",
                "file /etc/systemd/system/slice-firewall.service"
            ]
        );
        let rules = std::fs::read_to_string(dir.path().join("etc/slice/firewall.rules")).unwrap();
        assert!(rules.contains("-A SLICE-INPUT -j DROP\n"), "{rules}");
        let unit =
            std::fs::read_to_string(dir.path().join("etc/systemd/system/slice-firewall.service"))
                .unwrap();
        assert!(
            unit.contains("ExecStart=/bin/sh -c 'iptables -w -n -L DOCKER-USER"),
            "{unit}"
        );
    }

    #[test]
    fn probe_sections_split_cleanly() {
        let p = split_probe(
            "#slice-has-iptables\n#slice-iptables\n*filter\nCOMMIT\n#slice-nft-failed\nError: x\n",
        );
        assert!(p.has_iptables);
        assert_eq!(p.iptables, Some(Ok("*filter\nCOMMIT\n")));
        assert_eq!(p.nft, Some(Err("Error: x")));
        let p = split_probe("#slice-");
        assert!(!p.has_iptables && p.iptables.is_none() && p.nft.is_none());
    }
}
